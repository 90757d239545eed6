#!/usr/bin/env bash
# A private network for real: a network namespace holds an HTTP server (on
# the namespace's own 127.0.0.1) and an agent; the relay runs outside it.
# Direct mode cannot reach the server; the agent can. Needs root.
#
# Traffic goes only to the loopback interfaces and to the two veth addresses
# this script creates (10.213.77.1 and 10.213.77.2).
#
# A real Prometheus inside the namespace serves seed 003's blue/green
# analysis step, through the agent only (a provider with --agent).
#
# Last, the link is cut for 45 s with a request in flight: the request must
# fail with 502 within three heartbeat intervals (1 s here), and once the
# link is back the agent must serve again within 5 s.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BOREALIS_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
if [ "$(id -u)" != 0 ]; then
  echo "e2e-private-network: must run as root (it creates a network namespace)" >&2
  exit 1
fi
cargo build --workspace --bins --quiet

ID=$$
NS="borealis-e2e-$ID"
HOST_IF="bre${ID}h"
NS_IF="bre${ID}n"
HOST_ADDR=10.213.77.1
NS_ADDR=10.213.77.2
WORK=$(mktemp -d)
PIDS=()
passed=0
failed=0

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

check() { # name, then a command that must succeed
  local name=$1
  shift
  if "$@"; then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
  fi
}

wait_for() { # file, pattern, seconds
  for _ in $(seq 1 $(($3 * 10))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF"
ip link set "$NS_IF" netns "$NS"
ip addr add "$HOST_ADDR/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip netns exec "$NS" ip addr add "$NS_ADDR/30" dev "$NS_IF"
ip netns exec "$NS" ip link set "$NS_IF" up
ip netns exec "$NS" ip link set lo up

# The private server: on the namespace's own loopback, at a port that is
# free on the host too, so direct mode finds nothing there.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NONCE="private-$ID-$RANDOM"
mkdir -p "$WORK/www"
echo "$NONCE" > "$WORK/www/nonce.txt"
# A metric for the analysis step, scraped by a Prometheus inside the namespace.
printf '# TYPE borealis_e2e_cpu gauge\nborealis_e2e_cpu 0.42\n' > "$WORK/www/metrics.txt"
ip netns exec "$NS" python3 -u -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" > "$WORK/server.log" 2>&1 &
PIDS+=($!)

# A real Prometheus inside the namespace, on its own loopback: only the agent
# reaches it.
PROM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: e2e
    metrics_path: /metrics.txt
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
YAML
ip netns exec "$NS" prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 &
PIDS+=($!)

# An external system inside the namespace: it takes a webhook, then calls
# the relay back over the veth with a token it gets itself.
EXT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/external.py" <<'PY'
import http.server, json, sys, threading, urllib.parse, urllib.request
relay, client_id, client_secret, port = sys.argv[1:5]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        # /slow answers only after a minute: a request in flight during a cut.
        import time
        time.sleep(60)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        callback = self.headers["Location"]
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        def answer():
            form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret})
            token = json.load(urllib.request.urlopen(relay + "/oauth/token", data=form.encode()))["access_token"]
            body = json.dumps({"success": True, "mdMessage": "private check passed"}).encode()
            headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
            urllib.request.urlopen(urllib.request.Request(callback, data=body, headers=headers))
        threading.Thread(target=answer).start()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
print("ready", flush=True)
server.serve_forever()
PY

# The relay outside; its HTTP side on the veth, so callbacks from inside
# reach it. Direct mode may try loopback and the veth range, so a failure
# below is the network's doing, not the address guard's.
# Heartbeats every second, so that a cut link is noticed in seconds.
"$BIN/borealis-relay" --data-dir "$WORK/relay" --listen "$HOST_ADDR:0" --agent-listen "$HOST_ADDR:0" \
  --direct-allow 127.0.0.0/8 --direct-allow 10.213.77.0/30 --heartbeat-interval 1s > "$WORK/relay.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/relay.log" "relay ready" 20
HTTP_URL=$(grep -o 'http=[^ ]*' "$WORK/relay.log" | head -1 | cut -d= -f2)
AGENTS_URL=$(grep -o 'agents=[^ ]*' "$WORK/relay.log" | head -1 | cut -d= -f2)
export BOREALIS_RELAY="$HTTP_URL"
BOREALIS_ADMIN_TOKEN=$(cat "$WORK/relay/admin-token")
export BOREALIS_ADMIN_TOKEN

"$BIN/borealis" agents create e2e > "$WORK/creds.txt" 2>/dev/null
CLIENT_ID=$(awk '/^client_id:/ {print $2}' "$WORK/creds.txt")
# The secret in a file of mode 0600, as the docs say: never on the command line.
(umask 077 && awk '/^client_secret:/ {print $2}' "$WORK/creds.txt" > "$WORK/agent-secret")
ip netns exec "$NS" "$BIN/borealis-agent" --relay "$AGENTS_URL" --client-id "$CLIENT_ID" --client-secret-file "$WORK/agent-secret" \
  --allow "127.0.0.1:$PORT" --allow "127.0.0.1:$EXT_PORT" --allow "127.0.0.1:$PROM_PORT" > "$WORK/agent.log" 2>&1 &
PIDS+=($!)
"$BIN/borealis" clients create private-ci > "$WORK/client.txt" 2>/dev/null
ip netns exec "$NS" python3 "$WORK/external.py" "$HTTP_URL" \
  "$(awk '/^client_id:/ {print $2}' "$WORK/client.txt")" "$(awk '/^client_secret:/ {print $2}' "$WORK/client.txt")" "$EXT_PORT" \
  > "$WORK/external.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/server.log" "Serving HTTP" 20
wait_for "$WORK/external.log" "ready" 20
cat > "$WORK/deploy.yaml" <<YAML
webhooks:
  - name: private-check
    method: POST
    uriTemplate: http://127.0.0.1:$EXT_PORT/check
    networkMode: remoteNetworkAgent
    agentIdentifier: e2e
    headers:
      - key: Location
        value: '{{armory.callbackUri}}/callback'
YAML
wait_for "$WORK/agent.log" "connected to the relay" 20
"$BIN/borealis" providers create prom --type prometheus --url "http://127.0.0.1:$PROM_PORT" --agent e2e > /dev/null
# Seed 003's blue/green example; only the URL, the provider and the query are ours.
cat > "$WORK/blue-green.yaml" <<YAML
application: myApp
targets:
  prod:
    account: prod-cluster
    namespace: myApp-prod
    strategy: myBlueGreen
analysis:
  defaultMetricProviderName: prom
  queries:
    - name: avgCPUUsage-pass
      queryTemplate: borealis_e2e_cpu
      upperLimit: 1
      lowerLimit: 0
webhooks:
  - name: security-scan
    method: POST
    uriTemplate: http://127.0.0.1:$EXT_PORT/scan
    networkMode: remoteNetworkAgent
    agentIdentifier: e2e
    headers:
      - key: Location
        value: '{{armory.callbackUri}}/callback'
strategies:
  myBlueGreen:
    blueGreen:
      activeService: myApp-external
      previewService: myApp-preview
      redirectTrafficAfter:
        - analysis:
            interval: 2
            units: seconds
            numberOfJudgmentRuns: 1
            rollBackMode: manual
            rollForwardMode: automatic
            queries:
              - avgCPUUsage-pass
        - runWebhook:
            name: security-scan
YAML

direct_cannot_reach() {
  local url out
  for url in "http://127.0.0.1:$PORT/nonce.txt" "http://$NS_ADDR:$PORT/nonce.txt"; do
    if out=$("$BIN/borealis" proxy --timeout 5s "$url" 2>&1); then
      echo "direct mode reached $url: $out" >&2
      return 1
    fi
    echo "  direct $url -> $out"
    grep -q "could not connect" <<< "$out" || return 1
  done
}

agent_reaches() {
  local out
  out=$("$BIN/borealis" proxy --agent e2e "http://127.0.0.1:$PORT/nonce.txt") || return 1
  echo "  via agent -> $out"
  [ "$out" = "$NONCE" ]
}

webhook_through_agent() {
  local out
  out=$("$BIN/borealis" webhook run -f "$WORK/deploy.yaml" --name private-check --wait 2>&1) || { echo "$out" >&2; return 1; }
  echo "  webhook run -> $(tr '\n' ' ' <<< "$out")"
  grep -q "private check passed" <<< "$out"
}

agent_listed() {
  "$BIN/borealis" agents list | grep -E '^e2e +yes'
}

# The analysis step's Prometheus is reachable only through the agent; the
# deployment waits for a first sample, then runs and is judged by it.
analysis_through_agent() {
  local query="http://127.0.0.1:$PROM_PORT/api/v1/query?query=borealis_e2e_cpu" out
  if "$BIN/borealis" proxy --timeout 3s "$query" > /dev/null 2>&1; then
    echo "direct mode reached the private Prometheus" >&2
    return 1
  fi
  for _ in $(seq 1 300); do
    out=$("$BIN/borealis" proxy --agent e2e "$query" 2>/dev/null) && grep -q '"0.42"' <<< "$out" && break
    sleep 0.1
  done
  grep -q '"0.42"' <<< "$out" || { echo "Prometheus never scraped the metric: $out" >&2; tail -5 "$WORK/prometheus.log" >&2; return 1; }
  out=$(timeout 120 "$BIN/borealis" deploy -f "$WORK/blue-green.yaml" --wait 2>&1) || { echo "$out" >&2; return 1; }
  local id
  id=$("$BIN/borealis" --json deployments list | python3 -c 'import json, sys; print(json.load(sys.stdin)["deployments"][0]["id"])')
  out=$("$BIN/borealis" deployments show "$id")
  echo "  deploy -> succeeded; $(grep -c 0.42 <<< "$out") judgment value(s) of 0.42 shown"
  grep -q "0.42" <<< "$out"
}

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
within() { python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$1" "$2"; }

# The link is cut with a request in flight: 502 within three heartbeat
# intervals (3 s), not after TCP gives up.
cut_fails_fast() {
  "$BIN/borealis" proxy --agent e2e --timeout 120s "http://127.0.0.1:$EXT_PORT/slow" > "$WORK/cut.out" 2>&1 &
  local request=$! cut_at answered_at
  sleep 1
  ip netns exec "$NS" ip link set "$NS_IF" down
  cut_at=$(now)
  CUT_AT=$cut_at
  wait "$request" && { echo "the request succeeded across a cut link" >&2; return 1; }
  answered_at=$(now)
  echo "  in flight at the cut -> $(cat "$WORK/cut.out") after $(elapsed "$cut_at" "$answered_at") s"
  grep -q "(502 Bad Gateway)" "$WORK/cut.out" && within "$(elapsed "$cut_at" "$answered_at")" 3.3
}

# After 45 s the link heals: the agent serves again within 5 s.
heal_serves_fast() {
  sleep "$(python3 -c "import sys, time; print(max(0, 45 - (time.time() - float(sys.argv[1]))))" "$CUT_AT")"
  ip netns exec "$NS" ip link set "$NS_IF" up
  local healed_at served_at out
  healed_at=$(now)
  for _ in $(seq 1 100); do
    if out=$("$BIN/borealis" proxy --agent e2e --timeout 2s "http://127.0.0.1:$PORT/nonce.txt" 2>/dev/null) && [ "$out" = "$NONCE" ]; then
      served_at=$(now)
      echo "  served again $(elapsed "$healed_at" "$served_at") s after the link came back"
      within "$(elapsed "$healed_at" "$served_at")" 5
      return
    fi
    sleep 0.1
  done
  echo "the agent did not serve again within 10 s of the heal" >&2
  tail -20 "$WORK/agent.log" >&2
  return 1
}

check "the agent inside the namespace is connected" agent_listed
check "borealis proxy (direct) cannot reach the private server" direct_cannot_reach
check "borealis proxy --agent e2e reaches it" agent_reaches
check "a remoteNetworkAgent webhook runs through the agent and is called back" webhook_through_agent
check "seed 003's blue/green analysis queries the private Prometheus through the agent" analysis_through_agent
check "a request in flight when the link is cut fails with 502 within three heartbeats" cut_fails_fast
check "45 s later the link heals and the agent serves again within 5 s" heal_serves_fast

echo "e2e-private-network: $passed passed, $failed failed"
[ "$failed" = 0 ]
