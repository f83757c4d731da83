#!/bin/sh
# k8s_log_errors: log bytes the API server sends per scrape, full re-read
# against incremental mode, at a 30 s scrape of an 11 min window in the
# steady state (BenchmarkK8sLogScrape: a fake API server on loopback, 5
# lines a second). ROUNDS runs, each running both modes back to back; the
# ratio is the median of the per-round ratios with its range. That both
# modes count the same lines is a test
# (TestK8sLogErrorsIncrementalMatchesFullRead), not this benchmark.
# With BENCH_GOALS set, appends the goal row there.
# Env: ROUNDS (default 5), BENCHTIME (default 40x).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-40x}
res=$(mktemp)
trap 'rm -f "$res"' EXIT
for round in $(seq "$ROUNDS"); do
	go test -run '^$' -bench 'BenchmarkK8sLogScrape' -benchmem -benchtime "$BENCHTIME" -count 1 ./prober/ |
		awk -v r="$round" '/^BenchmarkK8sLogScrape\// {
			m = $1; sub(/^BenchmarkK8sLogScrape\//, "", m); sub(/-[0-9]+$/, "", m)
			for (i = 2; i <= NF; i++) {
				if ($i == "ns/op") ns = $(i-1); if ($i == "log-bytes/scrape") lb = $(i-1)
				if ($i == "B/op") by = $(i-1); if ($i == "allocs/op") al = $(i-1)
			}
			print r, m, ns, lb, by, al
		}' >>"$res"
done
awk -v rounds="$ROUNDS" -v bt="$BENCHTIME" -v goals="${BENCH_GOALS:-}" '
{ v[$1 " " $2 " ns"] = $3; v[$1 " " $2 " lb"] = $4; v[$1 " " $2 " by"] = $5; v[$1 " " $2 " al"] = $6; r[$1] = 1 }
function med(a, k) { return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
function sortn(a, k,    i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } }
# stat MODE FIELD: median over rounds; ratio FIELD: median [min–max] of full/incremental.
function stat(m, f,    a, k, x) { k = 0; for (x in r) a[++k] = v[x " " m " " f] + 0; sortn(a, k); return med(a, k) }
function ratio(f,    a, k, x) { k = 0; for (x in r) if (v[x " incremental " f] > 0) a[++k] = v[x " full " f] / v[x " incremental " f]
	sortn(a, k); return sprintf("%.1f [%.1f–%.1f]", med(a, k), a[1], a[k]) }
END {
	print "## Kubernetes log reads (k8s_log_errors, incremental)"
	print ""
	print "One scrape every 30 s of an 11 min window, steady state, one pod logging 5 lines a second (`go test -bench"
	print "BenchmarkK8sLogScrape -benchmem`, " bt " per run, " rounds " rounds, both modes in each). Bytes are what the fake API"
	print "server sent (incremental reads carry `timestamps=true` prefixes); time, memory and allocations include the"
	print "fake server and client-go. Ratios are full / incremental per round, median [min–max]."
	print ""
	print "| metric | full re-read | incremental | full / incremental |"
	print "|---|---:|---:|---:|"
	printf "| log bytes per scrape | %.0f | %.0f | %s |\n", stat("full", "lb"), stat("incremental", "lb"), ratio("lb")
	printf "| time per scrape, ms | %.2f | %.2f | %s |\n", stat("full", "ns") / 1e6, stat("incremental", "ns") / 1e6, ratio("ns")
	printf "| memory per scrape, KiB | %.0f | %.0f | %s |\n", stat("full", "by") / 1024, stat("incremental", "by") / 1024, ratio("by")
	printf "| allocations per scrape | %.0f | %.0f | %s |\n", stat("full", "al"), stat("incremental", "al"), ratio("al")
	if (goals != "") {
		x = ratio("lb"); split(x, p, " ")
		printf "(4) k8s_log_errors log bytes per scrape, full / incremental (30 s scrape, 11 min window)\t≥ 15\t%s\t%s\n", x, (p[1] + 0 >= 15) ? "met" : "not met" >> goals
	}
}' "$res"
