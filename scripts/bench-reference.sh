#!/usr/bin/env bash
# The references for the forward targets, measured with the benchmark's own
# load generator on this machine:
#
# 1. rathole v0.5.0 (a Rust TCP tunnel) in front of the benchmark's echo
#    server, interleaved with the echo server alone, Borealis direct and
#    Borealis via agent in one run of the forward scenario, with the CPU per
#    request of each path and the ratios against rathole as targets
#    (bench/results/reference.md). rathole is found as $RATHOLE, as
#    target/rathole/bin/rathole, or built there:
#      cargo install rathole --version 0.5.0 --no-default-features --features server,client
#    (`--locked` does not compile on today's Rust).
# 2. nginx, when installed (Debian: apt-get install nginx-light), as one
#    hop and as two chained hops.
#
# Usage: scripts/bench-reference.sh [DURATION]   (default 10s per case)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
cargo build --release -p borealis-relay -p borealis-agent -p borealis-bench
bench=target/release/borealis-bench

rathole="${RATHOLE:-target/rathole/bin/rathole}"
if [[ ! -x "$rathole" ]] || ! "$rathole" --version 2>/dev/null | grep -q '0\.5\.0'; then
  echo "building rathole 0.5.0 into target/rathole" >&2
  cargo install rathole --version 0.5.0 --no-default-features --features server,client --root target/rathole
  rathole=target/rathole/bin/rathole
fi

work="$(mktemp -d)"
echo_pid=""
bench_pid=""
nginx_bin="$(command -v nginx || true)"
cleanup() {
  [[ -n "$bench_pid" ]] && kill "$bench_pid" 2>/dev/null || true
  for conf in "$work"/hop*.conf; do
    [[ -f "$conf" && -n "$nginx_bin" ]] && "$nginx_bin" -c "$conf" -s stop 2>/dev/null || true
  done
  [[ -n "$echo_pid" ]] && kill "$echo_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The forward scenario with rathole beside the other paths. The benchmark
# stops its own processes (rathole's included) however it ends.
"$bench" --only forward --rathole "$rathole" --duration "$duration" --out "$work/rathole" &
bench_pid=$!
wait "$bench_pid"
bench_pid=""
mkdir -p bench/results
cp "$work/rathole/latest.md" bench/results/reference.md
cp "$work/rathole/latest.json" bench/results/reference.json
echo "wrote bench/results/reference.md and reference.json"

if [[ -z "$nginx_bin" ]]; then
  echo "nginx is not installed; skipping its reference (Debian: apt-get install nginx-light)" >&2
  exit 0
fi
"$bench" echo --listen 127.0.0.1:0 >"$work/echo.log" 2>&1 &
echo_pid=$!
for _ in $(seq 50); do grep -q "listening on" "$work/echo.log" && break; sleep 0.1; done
echo_addr="$(awk '/listening on/{print $3}' "$work/echo.log")"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# One worker process each: on two cores shared with the generator and the
# echo server, that measured faster than nginx's default of one per core.
hop() { # hop NAME LISTEN_PORT UPSTREAM
  cat >"$work/$1.conf" <<CONF
worker_processes 1;
pid $work/$1.pid;
error_log $work/$1.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream next { server $3; keepalive 128; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
CONF
  "$nginx_bin" -c "$work/$1.conf"
}
first="$(port)"
second="$(port)"
hop hop1 "$first" "$echo_addr"
hop hop2 "$second" "127.0.0.1:$first"
sleep 0.5

for concurrency in 1 64; do
  for target in "baseline http://$echo_addr/echo" "nginx-1-hop http://127.0.0.1:$first/echo" \
    "nginx-2-hops http://127.0.0.1:$second/echo"; do
    set -- $target
    printf '%-13s c%-3s ' "$1" "$concurrency"
    "$bench" --url "$2" --concurrency "$concurrency" --body-bytes 1024 --duration "$duration"
  done
done
