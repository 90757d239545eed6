#!/usr/bin/env bash
# Fuzzes the relay's HTTP API against its own OpenAPI document with
# Schemathesis (`pip install schemathesis`): the built relay
# (`$CARGO_TARGET_DIR/debug/borealis-relay`, default `target/`) on free
# loopback ports, a temp data dir, an admin token; then `schemathesis run`
# with the checks not_a_server_error, response_schema_conformance,
# status_code_conformance and content_type_conformance, bounded per
# operation (API_FUZZ_MAX_EXAMPLES, default 50) and in time (API_FUZZ_SECONDS,
# default 600). `/api/v1/proxy` is left out: it answers with a destination's
# status by design, 502 and 504 included.
#
# Exits non-zero on any failure, including a relay that serves no document.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BOREALIS_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
RELAY="$BIN/borealis-relay"
MAX_EXAMPLES=${API_FUZZ_MAX_EXAMPLES:-50}
SECONDS_BOUND=${API_FUZZ_SECONDS:-600}

fail() {
  echo "api-fuzz: $*" >&2
  exit 1
}

[ -x "$RELAY" ] || fail "$RELAY is missing: build it first (cargo build -p borealis-relay)"
command -v schemathesis >/dev/null || fail "schemathesis is missing: python3 -m pip install schemathesis"
command -v curl >/dev/null || fail "curl is missing"

WORK=$(mktemp -d)
RELAY_PID=
cleanup() {
  if [ -n "$RELAY_PID" ]; then
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Port 0: the relay picks free ports and logs them in its ready line, so no
# other process can take them between a choice and the bind.
TOKEN="api-fuzz-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# Schemathesis also sends requests without the token (or with a wrong one) on
# purpose; the per-address failure limit would then answer 429 to most of
# the run from 127.0.0.1, and the handlers would go untested.
BOREALIS_ADMIN_TOKEN="$TOKEN" BOREALIS_LOG=info BOREALIS_AUTH_FAILURES_PER_MINUTE=1000000 "$RELAY" \
  --data-dir "$WORK/data" --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
  2>"$WORK/relay.log" &
RELAY_PID=$!

HTTP=
for _ in $(seq 1 300); do
  kill -0 "$RELAY_PID" 2>/dev/null || { cat "$WORK/relay.log" >&2; fail "the relay exited before it was ready"; }
  line=$(grep -m1 'relay ready' "$WORK/relay.log" || true)
  if [ -n "$line" ]; then
    HTTP=$(sed -E 's/.*http=([^ ]+).*/\1/' <<<"$line")
    break
  fi
  sleep 0.1
done
[ -n "$HTTP" ] || { cat "$WORK/relay.log" >&2; fail "the relay logged no ready line"; }

for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$HTTP/readyz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "$HTTP/readyz" || fail "$HTTP/readyz never answered 2xx"

DOC="$HTTP/api/v1/openapi.json"
status=$(curl -sS -o "$WORK/openapi.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$DOC" || true)
[ "$status" = 200 ] || fail "the relay serves no OpenAPI document at $DOC (HTTP $status)"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert "openapi" in d and d.get("paths")' \
  "$WORK/openapi.json" 2>/dev/null || fail "$DOC is not an OpenAPI document with paths"

echo "api-fuzz: $DOC, at most $MAX_EXAMPLES examples per operation, ${SECONDS_BOUND}s in all"
set +e
timeout --signal=INT --kill-after=30 "$SECONDS_BOUND" \
  schemathesis run "$DOC" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --max-examples "$MAX_EXAMPLES" \
    --exclude-path /api/v1/proxy \
    --no-color
rc=$?
set -e
case $rc in
  0) echo "api-fuzz: passed" ;;
  124) fail "schemathesis did not finish within ${SECONDS_BOUND}s" ;;
  *)
    if [ -s "$WORK/relay.log" ] && grep -q 'panicked' "$WORK/relay.log"; then
      grep 'panicked' "$WORK/relay.log" >&2
    fi
    fail "schemathesis found failures (exit $rc)"
    ;;
esac
