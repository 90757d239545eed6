#!/usr/bin/env bash
# The whole test suite. The end-to-end tests run the real binaries, so they
# are built first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
if [ -n "${CI:-}" ]; then
  cargo nextest run --workspace --profile ci "$@"
else
  cargo nextest run --workspace "$@"
fi
