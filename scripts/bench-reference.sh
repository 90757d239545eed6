#!/usr/bin/env bash
# A reference for the forward targets: nginx as a plain reverse proxy in front
# of the benchmark's echo server, one hop (like direct mode) and two chained
# hops (like relay + agent), measured with the benchmark's own load generator
# on the same machine. Needs nginx (Debian: apt-get install nginx-light).
# Usage: scripts/bench-reference.sh [DURATION]   (default 10s per case)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
nginx_bin="$(command -v nginx || true)"
if [[ -z "$nginx_bin" ]]; then
  echo "nginx is not installed; on Debian: apt-get install nginx-light" >&2
  exit 2
fi
cargo build --release -p borealis-bench
bench=target/release/borealis-bench
work="$(mktemp -d)"
echo_pid=""
cleanup() {
  for conf in "$work"/hop*.conf; do
    [[ -f "$conf" ]] && "$nginx_bin" -c "$conf" -s stop 2>/dev/null || true
  done
  [[ -n "$echo_pid" ]] && kill "$echo_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bench" echo --listen 127.0.0.1:0 >"$work/echo.log" 2>&1 &
echo_pid=$!
for _ in $(seq 50); do grep -q "listening on" "$work/echo.log" && break; sleep 0.1; done
echo_addr="$(awk '/listening on/{print $3}' "$work/echo.log")"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# One worker process each: on two cores shared with the generator and the
# echo server, that measured faster than nginx's default of one per core.
hop() { # hop NAME LISTEN_PORT UPSTREAM
  cat >"$work/$1.conf" <<EOF
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
EOF
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
