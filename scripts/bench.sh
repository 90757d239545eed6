#!/usr/bin/env bash
# The benchmark: release build, then every scenario (or --only SCENARIO).
# Results: a table on the terminal, bench/results/latest.md and latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p borealis-relay -p borealis-agent -p borealis-bench
exec target/release/borealis-bench "$@"
