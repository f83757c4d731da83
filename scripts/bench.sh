#!/usr/bin/env bash
# `make bench`: greybox's http prober against Debian's
# prometheus-blackbox-exporter, side by side on the same local target, then
# the other benchmark sections (bench/logscan.sh, bench/parity.sh) when they
# exist. Writes BENCHMARKS.md at the repository root.
#
# Loopback only. Needs go, prometheus-blackbox-exporter (.ci/run installs it)
# and Linux /proc. Runs are interleaved (greybox, blackbox, blackbox,
# greybox, ...) so that machine noise and ordering hit both alike; the
# report gives medians over rounds and the median of the per-round ratios.
#
# Env: BENCH_DURATION (per run, default 6s), BENCH_ROUNDS (default 5),
#      BENCH_CONCURRENCY (default "8 32"), BENCH_OUT (default BENCHMARKS.md),
#      BENCH_ONLY_HTTP=1 to skip the other sections.
set -euo pipefail

DURATION=${BENCH_DURATION:-6s}
ROUNDS=${BENCH_ROUNDS:-5}
CONCURRENCY=${BENCH_CONCURRENCY:-8 32}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$root/BENCHMARKS.md}

blackbox=$(command -v prometheus-blackbox-exporter || true)
if [[ -z "$blackbox" ]]; then
	echo "bench.sh: prometheus-blackbox-exporter not found (Debian: apt-get install prometheus-blackbox-exporter, or run .ci/run)" >&2
	exit 1
fi
if [[ ! -r /proc/self/stat ]]; then
	echo "bench.sh: needs Linux /proc for CPU and RSS accounting" >&2
	exit 1
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

log() { echo "bench: $*" >&2; }

log "building"
(
	cd "$root"
	v=github.com/prometheus/common/version
	go build -trimpath -ldflags "-X $v.Version=$(git describe --tags --always --dirty 2>/dev/null || echo dev) -X $v.Revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
		-o "$tmp/greybox" ./cmd/greybox
	go build -trimpath -o "$tmp/target" ./bench/cmd/target
	go build -trimpath -o "$tmp/loadgen" ./bench/cmd/loadgen
)

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
	echo "bench.sh: no free port found" >&2
	return 1
}

"$tmp/target" -addr-file "$tmp/target.addr" 2>"$tmp/target.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$tmp/target.addr" ]] && break; sleep 0.1; done
target="http://$(cat "$tmp/target.addr")/"

# The same module for both: any 2xx, fail on an error page in the body.
module='    prober: http
    timeout: 5s
    http:
      valid_status_codes: []
      fail_if_body_matches_regexp: ["(?i)internal server error"]'
printf 'modules:\n  http_2xx:\n%s\n' "$module" >"$tmp/greybox.yml"
printf 'modules:\n  http_2xx:\n%s\n' "$module" >"$tmp/blackbox.yml"

gb_port=$(free_port)
"$tmp/greybox" --config.file="$tmp/greybox.yml" --web.listen-address="127.0.0.1:$gb_port" \
	>"$tmp/greybox.log" 2>&1 &
gb_pid=$!
pids+=("$gb_pid")
bb_port=$(free_port)
while [[ "$bb_port" == "$gb_port" ]]; do bb_port=$(free_port); done
"$blackbox" --config.file="$tmp/blackbox.yml" --web.listen-address="127.0.0.1:$bb_port" \
	>"$tmp/blackbox.log" 2>&1 &
bb_pid=$!
pids+=("$bb_pid")

enc_target=$(printf '%s' "$target" | sed 's/:/%3A/g; s#/#%2F#g')
declare -A url pid
url[greybox]="http://127.0.0.1:$gb_port/probe?module=http_2xx&target=$enc_target"
url[blackbox]="http://127.0.0.1:$bb_port/probe?module=http_2xx&target=$enc_target"
pid[greybox]=$gb_pid
pid[blackbox]=$bb_pid

clk_tck=$(getconf CLK_TCK)
# cpu_ticks PID: user+system time of PID in clock ticks (fields 14 and 15
# of /proc/PID/stat, counted after the parenthesised command name).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p"; }

idle_rss=() idle_anon=()
for name in greybox blackbox; do
	if ! "$tmp/loadgen" -url "${url[$name]}" -wait 30s; then
		cat "$tmp/$name.log" >&2
		exit 1
	fi
	idle_rss+=("$name $(status_kb "${pid[$name]}" VmRSS)")
	idle_anon+=("$name $(status_kb "${pid[$name]}" RssAnon)")
	# Warm-up: also proves the probe succeeds before anything is measured.
	warm=$("$tmp/loadgen" -url "${url[$name]}" -c 4 -n 400)
	if [[ "$(field errors <<<"$warm")" != 0 ]]; then
		echo "bench.sh: $name warm-up probes failed: $warm" >&2
		exit 1
	fi
done

: >"$tmp/results"
for c in $CONCURRENCY; do
	for round in $(seq "$ROUNDS"); do
		order="greybox blackbox"
		((round % 2)) || order="blackbox greybox"
		for name in $order; do
			p=${pid[$name]}
			# Reset VmHWM so peak RSS is this run's (Linux >= 4.0).
			echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true
			t0=$(cpu_ticks "$p")
			out=$("$tmp/loadgen" -url "${url[$name]}" -c "$c" -d "$DURATION")
			t1=$(cpu_ticks "$p")
			hwm=$(status_kb "$p" VmHWM)
			n=$(field requests <<<"$out")
			cpu1k=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$n" 'BEGIN {printf "%.4f", (n > 0) ? t / hz / n * 1000 : 0}')
			echo "$name $c $round $(field probes_per_second <<<"$out") $(field p50_ms <<<"$out") $(field p99_ms <<<"$out") $cpu1k $hwm $(field errors <<<"$out") $n" >>"$tmp/results"
			log "c=$c round=$round $name: $out cpu_s_per_1k=$cpu1k peak_rss_kb=$hwm"
		done
	done
done

# median NAME C COLUMN: the median of one column over the rounds.
median() {
	awk -v n="$1" -v c="$2" -v col="$3" '$1 == n && $2 == c {print $col}' "$tmp/results" | sort -g |
		awk '{a[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
total() { awk -v n="$1" -v c="$2" -v col="$3" '$1 == n && $2 == c {s += $col} END {print s + 0}' "$tmp/results"; }
# ratio C COLUMN: the median over rounds of greybox/blackbox within a round,
# which cancels the noise both runs of a round shared.
ratio() {
	awk -v c="$1" -v col="$2" '$2 == c {v[$1 " " $3] = $col; r[$3] = 1}
		END {for (k in r) if (v["blackbox " k] > 0) print v["greybox " k] / v["blackbox " k]}' "$tmp/results" | sort -g |
		awk '{a[NR] = $1} END {if (NR == 0) print "n/a"; else printf "%.2f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
ratio2() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
fmt() { awk -v v="$1" -v d="$2" 'BEGIN {printf "%.*f", d, v}'; }
mib() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1024}'; }

gb_version=$("$tmp/greybox" --version 2>&1 | head -1)
bb_version=$("$blackbox" --version 2>&1 | head -1)
{
	echo "# Benchmarks"
	echo
	echo "Produced by \`make bench\` (scripts/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(uname -m), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(go version | awk '{print $3}')."
	echo
	echo "Absolute numbers are noisy (shared machine; load generator, target and exporter on the same cores);"
	echo "only the side-by-side ratios, measured in the same run with interleaved rounds, are meaningful."
	echo
	echo "## HTTP probe: greybox vs blackbox_exporter"
	echo
	echo "Both exporters probe the same local HTTP target (\`bench/cmd/target\`: a fixed 30-byte 200 page) with"
	echo "an equivalent \`http_2xx\` module (any 2xx, \`fail_if_body_matches_regexp\`), a fresh connection per probe."
	echo "\`bench/cmd/loadgen\` keeps a fixed number of concurrent \`/probe\` requests in flight for $DURATION per run;"
	echo "$ROUNDS rounds per concurrency, interleaved (greybox first in odd rounds, blackbox first in even"
	echo "ones); the value columns are medians over rounds."
	echo "CPU is the exporter process' user+system time (/proc/PID/stat) per 1,000 probes; peak RSS is VmHWM"
	echo "during the run; idle RSS is VmRSS right after start-up."
	echo
	echo "- greybox: \`$gb_version\`"
	echo "- blackbox_exporter: \`$bb_version\` (Debian package)"
	echo
	echo "| concurrency | metric | greybox | blackbox_exporter | greybox / blackbox |"
	echo "|---:|---|---:|---:|---:|"
	for c in $CONCURRENCY; do
		g=$(median greybox "$c" 4) b=$(median blackbox "$c" 4)
		echo "| $c | probes/s (higher is better) | $(fmt "$g" 0) | $(fmt "$b" 0) | $(ratio "$c" 4) |"
		g=$(median greybox "$c" 5) b=$(median blackbox "$c" 5)
		echo "| $c | p50 latency, ms | $(fmt "$g" 2) | $(fmt "$b" 2) | $(ratio "$c" 5) |"
		g=$(median greybox "$c" 6) b=$(median blackbox "$c" 6)
		echo "| $c | p99 latency, ms | $(fmt "$g" 2) | $(fmt "$b" 2) | $(ratio "$c" 6) |"
		g=$(median greybox "$c" 7) b=$(median blackbox "$c" 7)
		echo "| $c | CPU seconds / 1,000 probes | $(fmt "$g" 3) | $(fmt "$b" 3) | $(ratio "$c" 7) |"
		g=$(median greybox "$c" 8) b=$(median blackbox "$c" 8)
		echo "| $c | peak RSS, MiB | $(mib "$g") | $(mib "$b") | $(ratio "$c" 8) |"
		echo "| $c | failed probes / total | $(total greybox "$c" 9) / $(total greybox "$c" 10) | $(total blackbox "$c" 9) / $(total blackbox "$c" 10) | |"
	done
	g=$(awk '$1 == "greybox" {print $2}' <<<"$(printf '%s\n' "${idle_rss[@]}")")
	b=$(awk '$1 == "blackbox" {print $2}' <<<"$(printf '%s\n' "${idle_rss[@]}")")
	echo "| – | idle RSS, MiB | $(mib "$g") | $(mib "$b") | $(ratio2 "$g" "$b") |"
	g=$(awk '$1 == "greybox" {print $2}' <<<"$(printf '%s\n' "${idle_anon[@]}")")
	b=$(awk '$1 == "blackbox" {print $2}' <<<"$(printf '%s\n' "${idle_anon[@]}")")
	echo "| – | idle RSS, anonymous only (heap, stacks), MiB | $(mib "$g") | $(mib "$b") | $(ratio2 "$g" "$b") |"
	echo
	echo "The ratio column is the median of the per-round ratios (each round runs both exporters back to back)."
	echo "Ratios below 1 favour greybox for latency, CPU and memory; above 1 for probes/s. Most of the idle RSS"
	echo "of both is the mapped executable (greybox links client-go for its Kubernetes probers); the anonymous"
	echo "row is the memory the process itself allocated."
	echo
	echo "<details><summary>Every run</summary>"
	echo
	echo "| exporter | concurrency | round | probes/s | p50 ms | p99 ms | CPU s / 1k | peak RSS KiB | errors | probes |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	awk '{printf "| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}' "$tmp/results"
	echo
	echo "</details>"
} >"$tmp/BENCHMARKS.md"

# The exporters are done; stop them so the other benchmarks get the cores.
cleanup_exporters() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
cleanup_exporters

for extra in bench/logscan.sh bench/parity.sh; do
	if [[ -n "${BENCH_ONLY_HTTP:-}" ]]; then
		log "skipping $extra (BENCH_ONLY_HTTP)"
	elif [[ -x "$root/$extra" ]]; then
		log "running $extra"
		{
			echo
			"$root/$extra"
		} >>"$tmp/BENCHMARKS.md"
	else
		log "skipping $extra (not present or not executable)"
	fi
done

mv "$tmp/BENCHMARKS.md" "$OUT"
log "wrote $OUT"
