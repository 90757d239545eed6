#!/usr/bin/env bash
# Browser tests of the relay's web console (tests/console): node:test with
# playwright-core driving Debian's Chromium. They run the real binaries from
# target/debug, so build them first (scripts/test.sh does). Extra arguments
# go to node, e.g. --test-name-pattern=agents.
set -euo pipefail
cd "$(dirname "$0")/.."
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "console tests need Node 20 or later (playwright-core does); found $(node --version)" >&2
  exit 1
fi
(cd tests/console && npm ci --no-audit --no-fund)
# One test file at a time: each starts its own relay and browser on a 2-core machine.
node --test --test-concurrency=1 --test-timeout=120000 "$@" tests/console/*.test.mjs
