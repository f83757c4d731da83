#!/bin/sh
# Benchmark traefik_parity: 20 fake Traefik replicas × 5,000 routers on
# loopback, one full probe per iteration. Prints a markdown table row per
# case with the median of 5 runs (time per probe, bytes and allocations).
set -eu
cd "$(dirname "$0")/.."
out=$(go test -run '^$' -bench BenchmarkTraefikParity -benchmem -count 5 ./prober/)
printf '%s\n' "$out" | awk '
/^BenchmarkTraefikParity/ {
	name = $1; sub(/^BenchmarkTraefikParity\//, "", name); sub(/-[0-9]+$/, "", name)
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
	print "## Traefik parity (traefik_parity)"
	print ""
	print "One full probe per iteration over 20 fake Traefik v3.7.9 replicas x 5,000 routers each, on loopback,"
	print "fake servers in the same process (`go test -bench BenchmarkTraefikParity`); medians of 5."
	print ""
	print "| traefik_parity case | probe time (median of 5) | memory per probe | allocs per probe |"
	print "|---|---|---|---|"
	for (i = 1; i <= n; i++) {
		c = order[i]
		printf "| %s | %.0f ms | %.1f MiB | %d |\n", c, median(ns[c]) / 1e6, median(by[c]) / 1048576, median(al[c])
	}
}'
