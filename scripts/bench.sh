#!/usr/bin/env bash
# `make bench`: greybox's http prober against Debian's
# prometheus-blackbox-exporter and against the floor (bench/cmd/floor: parse
# target, one GET on a fresh connection, three metric lines — the least a
# probe server can do), side by side on the same local target, then the
# other sections: k8s_log_errors reads (bench/k8slog.sh), log scanning
# (bench/logscan.sh), traefik_parity (bench/parity.sh), ttyd_ws against
# blackbox HEAD's websocket prober (bench/ttyd.sh, BLACKBOX_HEAD), allocations per
# probe (bench/allocs.sh) and a profile check (bench/profile.sh). Writes
# BENCHMARKS.md at the repository root, goals first.
#
# Loopback only. Needs go, prometheus-blackbox-exporter (.ci/run installs it)
# and Linux /proc; ripgrep for the log-scan goal (else reported n/a). Runs
# are interleaved (the servers in a rotating order each round) so that
# machine noise and ordering hit all alike; the report gives medians over
# rounds and the median of the per-round ratios with their range.
# A 503 in any run fails the run: refused requests are not probes.
#
# Env: BENCH_DURATION (per run, default 4s), BENCH_ROUNDS (default 5),
#      BENCH_CONCURRENCY (default "1 8 32"), BENCH_OUT (default BENCHMARKS.md),
#      BENCH_NOTE (a sentence for the header, e.g. what else ran),
#      BENCH_ONLY_HTTP=1 to skip the other sections.
set -euo pipefail

DURATION=${BENCH_DURATION:-4s}
ROUNDS=${BENCH_ROUNDS:-5}
CONCURRENCY=${BENCH_CONCURRENCY:-1 8 32}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$root/BENCHMARKS.md}

blackbox=$(command -v prometheus-blackbox-exporter || command -v blackbox_exporter || true)
if [[ -z "$blackbox" ]]; then
	echo "bench.sh: prometheus-blackbox-exporter not found (Debian: apt-get install prometheus-blackbox-exporter, or run .ci/run)" >&2
	exit 1
fi
if [[ ! -r /proc/self/stat ]]; then
	echo "bench.sh: needs Linux /proc for CPU and RSS accounting" >&2
	exit 1
fi

# shellcheck source=../bench/lib.sh
source "$root/bench/lib.sh"

log() { echo "bench: $*" >&2; }

log "building"
(
	cd "$root"
	v=github.com/prometheus/common/version
	go build -trimpath -ldflags "-X $v.Version=$(git describe --tags --always --dirty 2>/dev/null || echo dev) -X $v.Revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
		-o "$tmp/greybox" ./cmd/greybox
	go build -trimpath -o "$tmp/target" ./bench/cmd/target
	go build -trimpath -o "$tmp/loadgen" ./bench/cmd/loadgen
	go build -trimpath -o "$tmp/floor" ./bench/cmd/floor
)


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
# The same greybox with Go's own GC pacing, to show what the heap floor buys
# and what it costs in memory.
nf_port=$(free_port)
while [[ "$nf_port" == "$gb_port" ]]; do nf_port=$(free_port); done
"$tmp/greybox" --config.file="$tmp/greybox.yml" --web.listen-address="127.0.0.1:$nf_port" --runtime.gc-heap-floor=0 \
	>"$tmp/greybox_nofloor.log" 2>&1 &
nf_pid=$!
pids+=("$nf_pid")
bb_port=$(free_port)
while [[ "$bb_port" == "$gb_port" || "$bb_port" == "$nf_port" ]]; do bb_port=$(free_port); done
"$blackbox" --config.file="$tmp/blackbox.yml" --web.listen-address="127.0.0.1:$bb_port" \
	>"$tmp/blackbox.log" 2>&1 &
bb_pid=$!
pids+=("$bb_pid")

"$tmp/floor" >"$tmp/floor.addr" 2>"$tmp/floor.log" &
fl_pid=$!
pids+=("$fl_pid")
for _ in $(seq 100); do [[ -s "$tmp/floor.addr" ]] && break; sleep 0.1; done

enc_target=$(printf '%s' "$target" | sed 's/:/%3A/g; s#/#%2F#g')
declare -A url pid
url[greybox]="http://127.0.0.1:$gb_port/probe?module=http_2xx&target=$enc_target"
url[blackbox]="http://127.0.0.1:$bb_port/probe?module=http_2xx&target=$enc_target"
url[floor]="http://$(head -1 "$tmp/floor.addr")/probe?target=$enc_target"
pid[greybox]=$gb_pid
url[greybox_nofloor]="http://127.0.0.1:$nf_port/probe?module=http_2xx&target=$enc_target"
pid[greybox_nofloor]=$nf_pid
pid[blackbox]=$bb_pid
pid[floor]=$fl_pid
names=(greybox blackbox floor greybox_nofloor)

clk_tck=$(getconf CLK_TCK)
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

idle_rss=() idle_anon=()
for name in "${names[@]}"; do
	if ! "$tmp/loadgen" -url "${url[$name]}" -wait 30s; then
		cat "$tmp/$name.log" 2>/dev/null >&2
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
		# A rotating order: each server runs first, second and last alike.
		k=$(((round - 1) % ${#names[@]}))
		order="${names[*]:k} ${names[*]:0:k}"
		for name in $order; do
			p=${pid[$name]}
			# Reset VmHWM so peak RSS is this run's (Linux >= 4.0).
			echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true
			t0=$(cpu_ticks "$p")
			if ! out=$("$tmp/loadgen" -url "${url[$name]}" -c "$c" -d "$DURATION"); then
				echo "bench.sh: $name at concurrency $c round $round: loadgen failed (503s are refusals, not probes): $out" >&2
				exit 1
			fi
			t1=$(cpu_ticks "$p")
			hwm=$(status_kb "$p" VmHWM)
			n=$(field requests <<<"$out")
			cpu1k=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$n" 'BEGIN {printf "%.4f", (n > 0) ? t / hz / n * 1000 : 0}')
			echo "$name $c $round $(field probes_per_second <<<"$out") $(field p50_ms <<<"$out") $(field p99_ms <<<"$out") $cpu1k $hwm $(field errors <<<"$out") $n $(field refused_503 <<<"$out")" >>"$tmp/results"
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
# ratio A B C COLUMN: the per-round A/B (which cancels the noise both runs
# of a round shared) as "median [min–max]" over rounds.
ratio() {
	awk -v a="$1" -v b="$2" -v c="$3" -v col="$4" '$2 == c {v[$1 " " $3] = $col; r[$3] = 1}
		END {for (k in r) if (v[b " " k] > 0) print v[a " " k] / v[b " " k]}' "$tmp/results" | sort -g |
		awk '{a[NR] = $1} END {if (NR == 0) {print "n/a"; exit}
			m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			printf "%.2f [%.2f–%.2f]", m, a[1], a[NR]}'
}
ratio2() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
fmt() { awk -v v="$1" -v d="$2" 'BEGIN {printf "%.*f", d, v}'; }
mib() { awk -v v="$1" 'BEGIN {printf "%.1f", v / 1024}'; }
# cells C COLUMN DIGITS UNIT NAME...: each NAME's median at concurrency C
# as table cells, in MiB when UNIT is mib.
cells() {
	local c=$1 col=$2 digits=$3 unit=$4 n v
	shift 4
	for n in "$@"; do
		v=$(median "$n" "$c" "$col")
		if [[ "$unit" == mib ]]; then v=$(mib "$v"); else v=$(fmt "$v" "$digits"); fi
		printf ' %s |' "$v"
	done
}

gb_version=$("$tmp/greybox" --version 2>&1 | head -1)
bb_version=$("$blackbox" --version 2>&1 | head -1)
goals=$tmp/goals.tsv
: >"$goals"
for c in $CONCURRENCY; do
	cpu=$(ratio greybox floor "$c" 7) pps=$(ratio greybox floor "$c" 4)
	printf '(1) http: greybox / floor, CPU per probe, concurrency %s\t≤ 1.4\t%s\t%s\n' "$c" "$cpu" "$(verdict "$cpu" "<=" 1.4)" >>"$goals"
	printf '(1) http: greybox / floor, probes/s, concurrency %s\t≥ 0.75\t%s\t%s\n' "$c" "$pps" "$(verdict "$pps" ">=" 0.75)" >>"$goals"
	printf '(1) http: blackbox_exporter / floor, CPU per probe, concurrency %s\tfor scale\t%s\treported\n' "$c" "$(ratio blackbox floor "$c" 7)" >>"$goals"
	printf '(1) http: greybox with --runtime.gc-heap-floor=0 / floor, CPU per probe, concurrency %s\tfor scale\t%s\treported\n' "$c" "$(ratio greybox_nofloor floor "$c" 7)" >>"$goals"
done
refused=$(awk '{s += $11} END {print s + 0}' "$tmp/results")
printf '(6) loadgen: 503 answers in all http runs (a run with any fails)\t0\t%s\t%s\n' "$refused" "$([[ $refused == 0 ]] && echo met || echo "not met")" >>"$goals"
{
	echo "## HTTP probe: greybox vs blackbox_exporter vs the floor"
	echo
	echo "All three probe the same local HTTP target (\`bench/cmd/target\`: a fixed 30-byte 200 page), a fresh"
	echo "connection per probe: greybox and blackbox_exporter with an equivalent \`http_2xx\` module (any 2xx,"
	echo "\`fail_if_body_matches_regexp\`), and \`bench/cmd/floor\`, the least a probe server can do (parse \`target\`, one"
	echo "GET, three metric lines). \`bench/cmd/loadgen\` keeps a fixed number of concurrent \`/probe\` requests in"
	echo "flight for $DURATION per run; $ROUNDS rounds per concurrency, the four servers (the three and greybox with its heap floor off) in a rotating order; value columns are"
	echo "medians over rounds, ratio columns the median of the per-round ratios [min–max over rounds]."
	echo "CPU is the server process' user+system time (/proc/PID/stat) per 1,000 probes; peak RSS is VmHWM"
	echo "during the run; idle RSS is VmRSS right after start-up. A 503 in any run fails \`make bench\`."
	echo
	echo "- greybox: \`$gb_version\`"
	echo "- blackbox_exporter: \`$bb_version\`"
	echo
	echo "| concurrency | metric | greybox | blackbox_exporter | floor | greybox / blackbox | greybox / floor | blackbox / floor |"
	echo "|---:|---|---:|---:|---:|---:|---:|---:|"
	for c in $CONCURRENCY; do
		row() { # LABEL COLUMN DIGITS [mib]
			echo "| $c | $1 |$(cells "$c" "$2" "$3" "${4:-}" greybox blackbox floor) $(ratio greybox blackbox "$c" "$2") | $(ratio greybox floor "$c" "$2") | $(ratio blackbox floor "$c" "$2") |"
		}
		row "probes/s (higher is better)" 4 0
		row "p50 latency, ms" 5 2
		row "p99 latency, ms" 6 2
		row "CPU seconds / 1,000 probes" 7 3
		row "peak RSS, MiB" 8 0 mib
		echo "| $c | failed probes / total | $(total greybox "$c" 9) / $(total greybox "$c" 10) | $(total blackbox "$c" 9) / $(total blackbox "$c" 10) | $(total floor "$c" 9) / $(total floor "$c" 10) | | | |"
	done
	idle() { awk -v n="$1" '$1 == n {print $2}' <<<"$(printf '%s\n' "${@:2}")"; }
	g=$(idle greybox "${idle_rss[@]}") b=$(idle blackbox "${idle_rss[@]}") f=$(idle floor "${idle_rss[@]}")
	echo "| – | idle RSS, MiB | $(mib "$g") | $(mib "$b") | $(mib "$f") | $(ratio2 "$g" "$b") | $(ratio2 "$g" "$f") | $(ratio2 "$b" "$f") |"
	g=$(idle greybox "${idle_anon[@]}") b=$(idle blackbox "${idle_anon[@]}") f=$(idle floor "${idle_anon[@]}")
	echo "| – | idle RSS, anonymous only (heap, stacks), MiB | $(mib "$g") | $(mib "$b") | $(mib "$f") | $(ratio2 "$g" "$b") | $(ratio2 "$g" "$f") | $(ratio2 "$b" "$f") |"
	echo
	echo "Ratios below 1 favour the first named for latency, CPU and memory; above 1 for probes/s. Most of the idle RSS"
	echo "is the mapped executable (greybox links client-go for its Kubernetes probers); the anonymous row is the"
	echo "memory the process itself allocated."
	echo
	echo "greybox against itself with Go's own GC pacing (\`--runtime.gc-heap-floor=0\`), in the same rotation:"
	echo "what the heap floor buys in CPU and costs in memory."
	echo
	echo "| concurrency | metric | greybox | greybox, heap floor off | greybox / floor off | floor off / floor program |"
	echo "|---:|---|---:|---:|---:|---:|"
	for c in $CONCURRENCY; do
		nfrow() { # LABEL COLUMN DIGITS [mib]
			echo "| $c | $1 |$(cells "$c" "$2" "$3" "${4:-}" greybox greybox_nofloor) $(ratio greybox greybox_nofloor "$c" "$2") | $(ratio greybox_nofloor floor "$c" "$2") |"
		}
		nfrow "probes/s" 4 0
		nfrow "CPU seconds / 1,000 probes" 7 3
		nfrow "peak RSS, MiB" 8 0 mib
	done
	echo
	echo "<details><summary>Every run</summary>"
	echo
	echo "| server | concurrency | round | probes/s | p50 ms | p99 ms | CPU s / 1k | peak RSS KiB | errors | probes | 503s |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	awk '{printf "| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11}' "$tmp/results"
	echo
	echo "</details>"
} >"$tmp/http.md"

# The servers are done; stop them so the other benchmarks get the cores.
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done

: >"$tmp/sections.md"
for extra in bench/k8slog.sh bench/logscan.sh bench/parity.sh bench/ttyd.sh bench/allocs.sh; do
	if [[ -n "${BENCH_ONLY_HTTP:-}" ]]; then
		log "skipping $extra (BENCH_ONLY_HTTP)"
	elif [[ -x "$root/$extra" ]]; then
		log "running $extra"
		{
			echo
			ROUNDS=$ROUNDS RUNS=$ROUNDS BENCH_GOALS=$goals "$root/$extra"
		} >>"$tmp/sections.md"
	else
		log "skipping $extra (not present or not executable)"
	fi
done
if [[ -z "${BENCH_ONLY_HTTP:-}" && -x "$root/bench/profile.sh" ]]; then
	log "running bench/profile.sh"
	if prof=$(SECONDS_=3 TOP=1 "$root/bench/profile.sh" 2>&1); then
		total=$(sed -n 's/.*Total samples = \([^ ]*\).*/\1/p' <<<"$prof" | head -1)
		printf '(6) bench/profile.sh: CPU sampled in a 3 s profile under load\t> 0\t%s\tmet\n' "$total" >>"$goals"
	else
		printf '(6) bench/profile.sh: CPU sampled in a 3 s profile under load\t> 0\tfailed: %s\tnot met\n' "$(tail -1 <<<"$prof")" >>"$goals"
	fi
fi

{
	echo "# Benchmarks"
	echo
	echo "Produced by \`make bench\` (scripts/bench.sh) on $(date -u '+%Y-%m-%d %H:%M UTC') at $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown), $(nproc) CPUs ($(uname -m), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(go version | awk '{print $3}')."
	echo
	echo "Absolute numbers are noisy (shared machine; load generator, target and servers on the same cores);"
	echo "only the side-by-side ratios, measured in the same run with interleaved rounds, are meaningful."
	[[ -z "${BENCH_NOTE:-}" ]] || { echo; echo "$BENCH_NOTE"; }
	echo
	echo "## Goals"
	echo
	echo "Each goal's ratio as measured below, median [min–max over rounds], beside its target."
	echo
	echo "| goal | target | measured | |"
	echo "|---|---|---|---|"
	awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$goals"
	echo
	cat "$tmp/http.md" "$tmp/sections.md"
} >"$tmp/BENCHMARKS.md"

mv "$tmp/BENCHMARKS.md" "$OUT"
log "wrote $OUT"
