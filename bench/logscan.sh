#!/usr/bin/env bash
# Compare greybox's log scanner (the k8s_log_errors prober's) with grep -c -F
# on the same generated whisker-like log. Prints a markdown table.
#
# Needs: go, grep, and GNU time at /usr/bin/time (Debian: apt-get install time;
# the shell's "time" keyword cannot report max RSS).
# Env: SIZE (bytes, default 200000000), RUNS (default 5), PATTERN.
set -euo pipefail

SIZE=${SIZE:-200000000}
RUNS=${RUNS:-5}
PATTERN=${PATTERN:-failed to stream flows}

if [[ ! -x /usr/bin/time ]]; then
	echo "bench/logscan.sh: /usr/bin/time not found; install GNU time (Debian/Ubuntu: apt-get install time)" >&2
	exit 1
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$root" && go build -o "$tmp/logscan" ./bench/cmd/logscan)
"$tmp/logscan" -generate "$SIZE" "$tmp/whisker.log"
cat "$tmp/whisker.log" >/dev/null # both tools read from the page cache

# run NAME CMD...: appends "<ms> <maxrss_kb> <count>" to $tmp/NAME.
run() {
	local name=$1
	shift
	local t0 t1
	t0=$(date +%s%N)
	/usr/bin/time -f '%M' -o "$tmp/rss" "$@" >"$tmp/out"
	t1=$(date +%s%N)
	echo "$(((t1 - t0) / 1000000)) $(cat "$tmp/rss") $(cat "$tmp/out")" >>"$tmp/$name"
}

: >"$tmp/empty.log"
run baseline "$tmp/logscan" -e "$PATTERN" "$tmp/empty.log" # process RSS without any log

for _ in $(seq "$RUNS"); do # interleaved, so drift hits both alike
	run grep grep -c -F -- "$PATTERN" "$tmp/whisker.log"
	run greybox "$tmp/logscan" -e "$PATTERN" "$tmp/whisker.log"
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$tmp/$1"; }

gc=$(col grep 3 | sort -u)
bc=$(col greybox 3 | sort -u)
if [[ "$gc" != "$bc" ]]; then
	echo "bench/logscan.sh: counts differ: grep=$gc greybox=$bc" >&2
	exit 1
fi

mb=$(awk -v s="$SIZE" 'BEGIN {printf "%.0f", s/1e6}')
gt=$(col grep 1 | median)
bt=$(col greybox 1 | median)
echo "## Log scanning (k8s_log_errors)"
echo
echo "${mb} MB whisker-like log in the page cache, literal pattern \"$PATTERN\", $gc matching lines (counts agree), median of $RUNS interleaved runs. Wall time per process; max RSS from GNU time."
echo
echo "| tool | median ms | MB/s | max RSS (KB) |"
echo "|---|---:|---:|---:|"
printf '| grep -c -F | %s | %.0f | %s |\n' "$gt" "$(awk -v s="$SIZE" -v t="$gt" 'BEGIN {print (t>0) ? s/1e3/t : 0}')" "$(col grep 2 | median)"
printf '| greybox scanner | %s | %.0f | %s |\n' "$bt" "$(awk -v s="$SIZE" -v t="$bt" 'BEGIN {print (t>0) ? s/1e3/t : 0}')" "$(col greybox 2 | median)"
printf '| greybox scanner, empty file (baseline) | %s | | %s |\n' "$(col baseline 1)" "$(col baseline 2)"
echo
awk -v g="$gt" -v b="$bt" 'BEGIN {if (b > 0) printf "greybox / grep speed ratio: %.2f (>= 1 means at least as fast as grep)\n", g/b}'
