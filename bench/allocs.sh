#!/bin/sh
# Allocations per probe of each prober with a Go benchmark (-benchmem),
# one probe per op against loopback peers in the same process (their
# share is included). Prints a markdown section; medians over ROUNDS runs.
# Env: ROUNDS (default 5), BENCHTIME (default 200x).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-200x}
go test -run '^$' -bench '^(BenchmarkProbe|BenchmarkTTYDWS)$' -benchmem -benchtime "$BENCHTIME" -count "$ROUNDS" ./prober/ |
	awk -v rounds="$ROUNDS" -v bt="$BENCHTIME" -v goals="${BENCH_GOALS:-}" '
/^Benchmark/ {
	name = $1; sub(/^Benchmark(Probe\/)?/, "", name); sub(/-[0-9]+$/, "", name)
	if (name == "TTYDWS") name = "ttyd_ws"
	for (i = 2; i <= NF; i++) {
		if ($i == "ns/op") ns[name] = ns[name] " " $(i-1)
		if ($i == "B/op") by[name] = by[name] " " $(i-1)
		if ($i == "allocs/op") al[name] = al[name] " " $(i-1)
	}
	if (!(name in seen)) { seen[name] = 1; order[++n] = name }
}
function median(list,    a, k, i, j, t) {
	k = split(list, a, " ")
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
END {
	if (n == 0) { print "no benchmark results" > "/dev/stderr"; exit 1 }
	print "## Allocations per probe"
	print ""
	print "`go test -bench -benchmem`, one probe per op against a loopback peer in the same process (" bt " per run,"
	print "medians of " rounds " runs; the peer'"'"'s allocations are included). k8s_log_errors and traefik_parity are in their"
	print "own sections above."
	print ""
	print "| prober | allocs per probe | bytes per probe | µs per probe |"
	print "|---|---:|---:|---:|"
	for (i = 1; i <= n; i++) {
		c = order[i]
		printf "| %s | %d | %.0f | %.0f |\n", c, median(al[c]), median(by[c]), median(ns[c]) / 1000
		if (goals != "" && c == "ttyd_ws") printf "(3) ttyd_ws: allocations per session\tfor scale\t%d\treported\n", median(al[c]) >> goals
	}
}'
