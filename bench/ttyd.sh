#!/usr/bin/env bash
# ttyd_ws against blackbox_exporter's websocket prober on the same fake ttyd
# (bench/cmd/ttyd, internal/testpeer/ttyd), interleaved rounds. greybox runs
# its default ttyd_ws session: GET /token, the upgrade with the tty
# subprotocol, the init message with the token, the first frame, a close
# handshake. blackbox runs the nearest it can: the upgrade with the tty
# subprotocol, the init message (query_response send), one frame (expect),
# then it drops the connection. Issue 13's goal (3) compares with blackbox
# HEAD, whose websocket prober Debian's 0.23 lacks: set BLACKBOX_HEAD to a
# blackbox_exporter binary built from its main branch; without it the
# section says so and greybox alone is measured. The Go module proxy does
# not serve blackbox_exporter, so build it from a checkout:
#   git clone https://github.com/prometheus/blackbox_exporter && (cd blackbox_exporter && go build)
#   BLACKBOX_HEAD=$PWD/blackbox_exporter/blackbox_exporter make bench
#
# Prints a markdown section; with BENCH_GOALS set, appends goal rows there.
# Env: ROUNDS (default 5), BENCH_DURATION (default 4s), CONCURRENCY (default 8).
set -euo pipefail
ROUNDS=${ROUNDS:-5}
DURATION=${BENCH_DURATION:-4s}
CONCURRENCY=${CONCURRENCY:-8}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$root/bench/lib.sh"
log() { echo "bench/ttyd.sh: $*" >&2; }

(
	cd "$root"
	go build -trimpath -o "$tmp/greybox" ./cmd/greybox
	go build -trimpath -o "$tmp/ttyd" ./bench/cmd/ttyd
	go build -trimpath -o "$tmp/loadgen" ./bench/cmd/loadgen
)
bb=${BLACKBOX_HEAD:-}
if [[ -n "$bb" && ! -x "$bb" ]]; then
	log "BLACKBOX_HEAD=$bb is not an executable; measuring greybox alone"
	bb=
fi

"$tmp/ttyd" -addr-file "$tmp/ttyd.addr" 2>"$tmp/ttyd.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$tmp/ttyd.addr" ]] && break; sleep 0.1; done
base=$(cat "$tmp/ttyd.addr")
ws="ws://${base#http://}/ws"

enc() { printf '%s' "$1" | sed 's/:/%3A/g; s#/#%2F#g'; }

printf 'modules:\n  ttyd:\n    prober: ttyd_ws\n    timeout: 5s\n%s' "${GREYBOX_TTYD_EXTRA:-}" >"$tmp/greybox.yml"
gb_port=$(free_port)
"$tmp/greybox" --config.file="$tmp/greybox.yml" --web.listen-address="127.0.0.1:$gb_port" >"$tmp/greybox.log" 2>&1 &
pid_greybox=$!
pids+=("$pid_greybox")
declare -A url pid
url[greybox]="http://127.0.0.1:$gb_port/probe?module=ttyd&target=$(enc "$base")"
pid[greybox]=$pid_greybox
names=(greybox)
if [[ -n "$bb" ]]; then
	cat >"$tmp/blackbox.yml" <<'YML'
modules:
  ttyd:
    prober: websocket
    timeout: 5s
    websocket:
      headers:
        Sec-WebSocket-Protocol: {values: [tty]}
      query_response:
        - send: '{"AuthToken":"","columns":80,"rows":24}'
        - expect: '^1'
YML
	bb_port=$(free_port)
	while [[ "$bb_port" == "$gb_port" ]]; do bb_port=$(free_port); done
	"$bb" --config.file="$tmp/blackbox.yml" --web.listen-address="127.0.0.1:$bb_port" >"$tmp/blackbox.log" 2>&1 &
	pid[blackbox]=$!
	pids+=("${pid[blackbox]}")
	url[blackbox]="http://127.0.0.1:$bb_port/probe?module=ttyd&target=$(enc "$ws")"
	names+=(blackbox)
fi

clk_tck=$(getconf CLK_TCK)
for name in "${names[@]}"; do
	"$tmp/loadgen" -url "${url[$name]}" -wait 30s
	# The probe must succeed: a failing session is cheaper and proves nothing.
	out=$(curl -s "${url[$name]}")
	if ! grep -q '^probe_success 1' <<<"$out"; then
		log "$name: the probe does not succeed against the fake ttyd:"
		curl -s "${url[$name]}&debug=true" >&2 || true
		exit 1
	fi
	"$tmp/loadgen" -url "${url[$name]}" -c 4 -n 200 >/dev/null
done

: >"$tmp/results"
for round in $(seq "$ROUNDS"); do
	order=("${names[@]}")
	((round % 2)) || order=($(printf '%s\n' "${names[@]}" | tac))
	for name in "${order[@]}"; do
		p=${pid[$name]}
		t0=$(cpu_ticks "$p")
		if ! out=$("$tmp/loadgen" -url "${url[$name]}" -c "$CONCURRENCY" -d "$DURATION"); then
			log "$name round $round: loadgen failed: $out"
			exit 1
		fi
		t1=$(cpu_ticks "$p")
		n=$(field requests <<<"$out")
		cpu=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$n" 'BEGIN {printf "%.4f", (n > 0) ? t / hz / n * 1000 : 0}')
		echo "$name $round $(field probes_per_second <<<"$out") $cpu $(field errors <<<"$out") $n" >>"$tmp/results"
		log "round $round $name: $out cpu_s_per_1k=$cpu"
	done
done

median() { awk -v n="$1" -v c="$2" '$1 == n {print $c}' "$tmp/results" | sort -g |
	awk '{a[NR] = $1} END {if (NR == 0) print 0; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratio() {
	awk -v a="$1" -v b="$2" -v col="$3" '{v[$1 " " $2] = $col; r[$2] = 1}
		END {for (k in r) if (v[b " " k] > 0) print v[a " " k] / v[b " " k]}' "$tmp/results" | sort -g |
		awk '{a[NR] = $1} END {if (NR == 0) {print "n/a"; exit}
			m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			printf "%.2f [%.2f–%.2f]", m, a[1], a[NR]}'
}
errors=$(awk '{s += $5} END {print s + 0}' "$tmp/results")
echo "## ttyd_ws vs blackbox_exporter's websocket prober"
echo
echo "Both probe the same fake ttyd (\`bench/cmd/ttyd\`) at concurrency $CONCURRENCY, $DURATION per run, $ROUNDS interleaved rounds."
echo "greybox: the default \`ttyd_ws\` module (token, upgrade, init, first frame, close handshake); blackbox: a"
echo "\`websocket\` module with the tty subprotocol, the init message as \`send\` and one frame as \`expect\`."
if [[ -n "$bb" ]]; then
	echo "blackbox_exporter: \`$("$bb" --version 2>&1 | head -1)\` (\`BLACKBOX_HEAD\`)."
else
	echo "blackbox_exporter HEAD: not measured (set BLACKBOX_HEAD to its binary)."
fi
echo
echo "| server | probes/s | CPU s / 1,000 probes | failed / total |"
echo "|---|---:|---:|---:|"
for name in "${names[@]}"; do
	echo "| $name | $(median "$name" 3 | awk '{printf "%.0f", $1}') | $(median "$name" 4 | awk '{printf "%.3f", $1}') | $(awk -v n="$name" '$1 == n {e += $5; t += $6} END {print e + 0 " / " t + 0}' "$tmp/results") |"
done
pps=n/a cpu=n/a
if [[ -n "$bb" ]]; then
	pps=$(ratio greybox blackbox 3) cpu=$(ratio greybox blackbox 4)
	echo
	echo "greybox / blackbox: probes/s $pps, CPU per probe $cpu (per-round ratios, median [min–max])."
fi
if [[ -n "${BENCH_GOALS:-}" ]]; then
	printf '(3) ttyd_ws / blackbox HEAD websocket, probes/s, concurrency %s\t≥ 1.0\t%s\t%s\n' "$CONCURRENCY" "$pps" "$(verdict "$pps" ">=" 1.0)" >>"$BENCH_GOALS"
	printf '(3) ttyd_ws / blackbox HEAD websocket, CPU per probe, concurrency %s\t≤ 1.0\t%s\t%s\n' "$CONCURRENCY" "$cpu" "$(verdict "$cpu" "<=" 1.0)" >>"$BENCH_GOALS"
fi
if ((errors > 0)); then
	log "$errors probes failed"
	exit 1
fi
