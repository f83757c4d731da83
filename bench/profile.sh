#!/usr/bin/env bash
# CPU profile of greybox under the `make bench` HTTP load, without putting
# pprof in the production binary: cmd/greybox is copied into bench/out/
# (gitignored) next to a file that serves net/http/pprof on a second
# loopback port, built, loaded with bench/cmd/loadgen, and profiled.
#
# Env: CONCURRENCY (default 32), SECONDS_ (profile length, default 10),
#      TOP (lines of `go tool pprof -top`, default 40).
# Leaves the profile in bench/out/greybox.cpu.pprof.
set -euo pipefail
CONCURRENCY=${CONCURRENCY:-32}
SECONDS_=${SECONDS_:-10}
TOP=${TOP:-40}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/bench/out
mkdir -p "$out/pprofmain"
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp" "$out/pprofmain"
}
trap cleanup EXIT

for f in "$root"/cmd/greybox/*.go; do
	[[ "$f" == *_test.go ]] || cp "$f" "$out/pprofmain/"
done
cat >"$out/pprofmain/pprof.go" <<'GO'
package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	go func() { _ = http.ListenAndServe(os.Getenv("GREYBOX_PPROF_ADDR"), nil) }()
}
GO
(
	cd "$root"
	go build -o "$tmp/greybox" ./bench/out/pprofmain
	go build -o "$tmp/target" ./bench/cmd/target
	go build -o "$tmp/loadgen" ./bench/cmd/loadgen
)
"$tmp/target" -addr-file "$tmp/target.addr" &
pids+=($!)
for _ in $(seq 100); do [[ -s "$tmp/target.addr" ]] && break; sleep 0.1; done
printf 'modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      valid_status_codes: []\n      fail_if_body_matches_regexp: ["(?i)internal server error"]\n' >"$tmp/greybox.yml"
port=$((20000 + RANDOM % 20000))
GREYBOX_PPROF_ADDR=127.0.0.1:$((port + 1)) "$tmp/greybox" --config.file="$tmp/greybox.yml" --web.listen-address="127.0.0.1:$port" >"$tmp/greybox.log" 2>&1 &
pids+=($!)
url="http://127.0.0.1:$port/probe?module=http_2xx&target=http%3A%2F%2F$(cat "$tmp/target.addr")%2F"
"$tmp/loadgen" -url "$url" -wait 30s
"$tmp/loadgen" -url "$url" -c 4 -n 500 >/dev/null
# Readiness is asked of the pprof index, which answers at once: asking it
# of /debug/pprof/profile took a whole profile's length, so the profile
# proper started as the load ended and came back empty.
"$tmp/loadgen" -url "http://127.0.0.1:$((port + 1))/debug/pprof/" -wait 30s
# The load outlasts the profile, which starts as soon as the load does.
"$tmp/loadgen" -url "$url" -c "$CONCURRENCY" -d "$((SECONDS_ + 2))s" >"$tmp/load.json" &
lg=$!
curl -fsS -o "$out/greybox.cpu.pprof" "http://127.0.0.1:$((port + 1))/debug/pprof/profile?seconds=$SECONDS_"
wait "$lg"
cat "$tmp/load.json"
go tool pprof -top -nodecount="$TOP" "$tmp/greybox" "$out/greybox.cpu.pprof" 2>/dev/null >"$tmp/top"
cat "$tmp/top"
if grep -q 'Total samples = 0 *$' "$tmp/top" || ! grep -q 'Total samples' "$tmp/top"; then
	echo "profile.sh: the profile has no samples: it did not run under the load" >&2
	exit 1
fi
