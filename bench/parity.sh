#!/bin/sh
# Benchmark traefik_parity at every size BenchmarkTraefikParity defines
# (fake Traefik replicas on loopback, one full probe per iteration). Prints a
# markdown section: per case the median over ROUNDS runs of time, bytes and
# allocations per probe, with the time's range, and the time per
# replica × router (the cost should grow only with the work).
# With BENCH_GOALS set, appends the scaling row there.
# Env: ROUNDS (default 5), BENCHTIME (default 3x: short, the machine is shared).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-3x}
out=$(go test -run '^$' -bench BenchmarkTraefikParity -benchmem -benchtime "$BENCHTIME" -count "$ROUNDS" ./prober/)
printf '%s\n' "$out" | awk -v rounds="$ROUNDS" -v bt="$BENCHTIME" -v goals="${BENCH_GOALS:-}" '
/^BenchmarkTraefikParity/ {
	name = $1; sub(/^BenchmarkTraefikParity\//, "", name); sub(/-[0-9]+$/, "", name)
	for (i = 2; i <= NF; i++) {
		if ($i == "ns/op") ns[name] = ns[name] " " $(i-1)
		if ($i == "B/op") by[name] = by[name] " " $(i-1)
		if ($i == "allocs/op") al[name] = al[name] " " $(i-1)
	}
	if (!(name in seen)) { seen[name] = 1; order[++n] = name }
}
function sorted(list, a,    k, i, j, t) {
	k = split(list, a, " ")
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return k
}
function median(list,    a, k) { k = sorted(list, a); return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
function lo(list,    a) { sorted(list, a); return a[1] }
function hi(list,    a, k) { k = sorted(list, a); return a[k] }
END {
	if (n == 0) { print "no benchmark results" > "/dev/stderr"; exit 1 }
	print "## Traefik parity (traefik_parity)"
	print ""
	print "One full probe per iteration over fake Traefik v3.7.9 replicas on loopback, fake servers in the same"
	print "process (`go test -bench BenchmarkTraefikParity -benchmem`, " bt " per run, " rounds " runs); medians, time range over runs."
	print "The last column divides the time by replicas × routers: flat means the cost grows only with the work."
	print ""
	print "| case | probe time ms, median [min–max] | memory per probe | allocs per probe | µs per replica × router |"
	print "|---|---|---:|---:|---:|"
	for (i = 1; i <= n; i++) {
		c = order[i]
		work = 0
		if (match(c, /replicas=[0-9]+/)) r = substr(c, RSTART + 9, RLENGTH - 9)
		if (match(c, /routers=[0-9]+/)) { w = substr(c, RSTART + 8, RLENGTH - 8); work = r * w }
		per = (work > 0) ? sprintf("%.3f", median(ns[c]) / 1000 / work) : "n/a"
		printf "| %s | %.0f [%.0f–%.0f] | %.1f MiB | %d | %s |\n", c, median(ns[c]) / 1e6, lo(ns[c]) / 1e6, hi(ns[c]) / 1e6, median(by[c]) / 1048576, median(al[c]), per
		if (work > 0 && (small == "" || work < smallw)) { small = c; smallw = work }
		if (work > 0 && (big == "" || work > bigw)) { big = c; bigw = work }
	}
	if (goals != "" && small != big) {
		printf "(2) traefik_parity: time per replica × router, %s / %s\tcost grows only with the work (≤ 1)\t%.2f\t%s\n", big, small, (median(ns[big]) / bigw) / (median(ns[small]) / smallw), (((median(ns[big]) / bigw) / (median(ns[small]) / smallw) <= 1) ? "met" : "not met") >> goals
	}
	# Issue 13 (2): the sizes the goal names, with default settings.
	if (goals != "") {
		goal("replicas=50/routers=20000", "time", 1000, "< 1 s")
		goal("replicas=50/routers=20000", "mem", 100, "< 100 MiB")
		goal("replicas=20/routers=5000", "time", 100, "< 100 ms")
	}
}
function goal(c, what, limit, target,    v, shown) {
	if (!(c in ns)) { printf "(2) traefik_parity %s %s\t%s\tnot run\tnot met\n", c, what, target >> goals; return }
	if (what == "time") { v = median(ns[c]) / 1e6; shown = sprintf("%.0f ms [%.0f–%.0f]", v, lo(ns[c]) / 1e6, hi(ns[c]) / 1e6) }
	else { v = median(by[c]) / 1048576; shown = sprintf("%.1f MiB", v) }
	printf "(2) traefik_parity %s, %s per probe\t%s\t%s\t%s\n", c, ((what == "time") ? "time" : "allocated memory"), target, shown, ((v < limit) ? "met" : "not met") >> goals
}'
