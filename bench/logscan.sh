#!/usr/bin/env bash
# Compare greybox's log scanner (the k8s_log_errors prober's) with
# ripgrep (rg -c -F --no-mmap) and grep -c -F on the same generated
# whisker-like log, at three sizes, for one literal and for two. Prints a
# markdown section; with BENCH_GOALS set, appends the scanner's goal rows
# there (tab-separated: goal, target, measured, verdict).
#
# CPU is user+system time of each process and memory its max RSS, from
# rusage (bench/cmd/cputime, microseconds). Runs are
# interleaved (rg, greybox, grep, then the next round in another order) so
# drift hits all alike; the ratio is the median of the per-round ratios,
# with the range over rounds.
#
# Needs: go, grep; ripgrep (apt-get install ripgrep) for the goal rows; without it they say so.
# Env: SIZES (bytes, default "200000000 500000000 1000000000"), RUNS (default 5).
set -euo pipefail

SIZES=${SIZES:-200000000 500000000 1000000000}
RUNS=${RUNS:-5}
P1='failed to stream flows'
P2='code = Unavailable desc = connection error'

rg=$(command -v rg || true)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$root" && go build -o "$tmp/logscan" ./bench/cmd/logscan && go build -o "$tmp/cputime" ./bench/cmd/cputime)
max=0
for s in $SIZES; do ((s > max)) && max=$s; done
"$tmp/logscan" -generate "$max" "$tmp/big.log"

# run TOOL SIZE NPAT ROUND CMD...: appends one result line to $tmp/results.
run() {
	local tool=$1 size=$2 npat=$3 round=$4
	shift 4
	"$tmp/cputime" -o "$tmp/time" "$@" >"$tmp/out"
	read -r c e m <"$tmp/time"
	echo "$tool $size $npat $round $c $e $m $(tr -d '\n' <"$tmp/out")" >>"$tmp/results"
}

: >"$tmp/results"
for size in $SIZES; do
	f=$tmp/log.$size
	head -c "$size" "$tmp/big.log" >"$f"
	cat "$f" >/dev/null # every tool reads from the page cache
	for npat in 1 2; do
		gb=(-e "$P1") fx=(-e "$P1")
		if ((npat == 2)); then gb+=(-e "$P2") fx+=(-e "$P2"); fi
		for round in $(seq "$RUNS"); do
			tools="rg greybox grep"
			((round % 2)) || tools="grep greybox rg"
			for t in $tools; do
				case $t in
				rg) [[ -n "$rg" ]] && run rg "$size" "$npat" "$round" "$rg" -c -F --no-mmap "${fx[@]}" "$f" ;;
				greybox) run greybox "$size" "$npat" "$round" "$tmp/logscan" "${gb[@]}" "$f" ;;
				grep) run grep "$size" "$npat" "$round" grep -c -F "${fx[@]}" "$f" ;;
				esac
			done
		done
	done
	rm -f "$f"
done

# Every tool must have counted the same lines.
bad=$(awk '{k = $2 " " $3; if (k in c && c[k] != $8) print k ": " $1 " counted " $8 ", another " c[k]; c[k] = $8}' "$tmp/results")
if [[ -n "$bad" ]]; then
	echo "bench/logscan.sh: counts differ: $bad" >&2
	exit 1
fi

med() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "n/a"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { awk -v t="$1" -v s="$2" -v n="$3" -v c="$4" '$1 == t && $2 == s && $3 == n {print $c}' "$tmp/results"; }
# ratio A B SIZE NPAT: per-round CPU(B)/CPU(A) — A's speed relative to B,
# above 1 when A is faster — as "median [min–max]".
ratio() {
	awk -v a="$1" -v b="$2" -v s="$3" -v n="$4" '$2 == s && $3 == n {v[$1 " " $4] = $5; r[$4] = 1}
		END {for (k in r) if (v[a " " k] > 0 && (b " " k) in v) print v[b " " k] / v[a " " k]}' "$tmp/results" | sort -g |
		awk '{a[NR] = $1} END {if (NR == 0) {print "n/a"; exit}
			m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			printf "%.2f [%.2f–%.2f]", m, a[1], a[NR]}'
}

echo "## Log scanning (k8s_log_errors)"
echo
echo "The scanner (\`bench/cmd/logscan\`, the prober's \`prober/logscan\`) against ripgrep (\`rg -c -F --no-mmap\`) and"
echo "\`grep -c -F\` on the same generated whisker-like log in the page cache, one literal (\"$P1\") and two"
echo "(\"$P1\", \"$P2\"). CPU is user+system seconds of the process (rusage, \`bench/cmd/cputime\`);"
echo "medians of $RUNS interleaved rounds; every tool counted the same lines."
echo "Speed ratios are CPU(other)/CPU(greybox) per round, median [min–max]: above 1 means the scanner used less CPU."
[[ -n "$rg" ]] || echo "ripgrep is not installed (Debian: apt-get install ripgrep): its columns are n/a."
echo "The scanner also counts every line (\`probe_k8s_log_scanned_lines\`), which \`-c\` does not ask of rg or grep."
echo
echo "| size | patterns | matching lines | rg CPU s | greybox CPU s | grep CPU s | greybox vs rg | greybox vs grep | max RSS KiB rg / greybox / grep |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for size in $SIZES; do
	for npat in 1 2; do
		n=$(col greybox "$size" "$npat" 8 | head -1)
		printf '| %s MB | %s | %s | %.3f | %.3f | %.3f | %s | %s | %s / %s / %s |\n' "$((size / 1000000))" "$npat" "$n" \
			"$(col rg "$size" "$npat" 5 | med)" "$(col greybox "$size" "$npat" 5 | med)" "$(col grep "$size" "$npat" 5 | med)" \
			"$(ratio greybox rg "$size" "$npat")" "$(ratio greybox grep "$size" "$npat")" \
			"$(col rg "$size" "$npat" 7 | med)" "$(col greybox "$size" "$npat" 7 | med)" "$(col grep "$size" "$npat" 7 | med)"
	done
done

if [[ -n "${BENCH_GOALS:-}" ]]; then
	verdict() { awk -v r="${1%% *}" -v t="$2" 'BEGIN {if (r == "n/a") print "not measured"; else print (r + 0 >= t) ? "met" : "not met"}'; }
	for npat in 1 2; do
		target=1.0
		((npat == 2)) && target=0.7
		r=$(ratio greybox rg "$max" "$npat")
		printf '(5) log scanner vs ripgrep, CPU, %s literal(s), %s MB\t≥ %s\t%s\t%s\n' "$npat" "$((max / 1000000))" "$target" "$r" "$(verdict "$r" "$target")" >>"$BENCH_GOALS"
	done
fi
