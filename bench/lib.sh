# Shared by the bench scripts (sourced, not run): the processes they start,
# loopback ports, and reading /proc and loadgen's JSON.

# pids lists the processes to stop on exit; tmp is removed.
pids=()
tmp=$(mktemp -d)
bench_cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap bench_cleanup EXIT

# free_port prints a loopback port nobody is listening on right now.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "bench: no free port found" >&2
	return 1
}

# cpu_ticks PID: user+system time of PID in clock ticks (fields 14 and 15
# of /proc/PID/stat, counted after the parenthesised command name).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# field NAME: a number from loadgen's one-line JSON on stdin.
field() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p"; }

# verdict "MEDIAN [RANGE]" OP TARGET: met when the median meets the target
# (OP is >= or <=), "not measured" for n/a.
verdict() {
	awk -v m="${1%% *}" -v op="$2" -v t="$3" 'BEGIN {if (m == "n/a") print "not measured"; else if ((op == ">=" && m >= t) || (op == "<=" && m <= t)) print "met"; else print "not met"}'
}
