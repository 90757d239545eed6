#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs or starts what is missing
# (scripts/setup.sh says what), builds the binaries the end-to-end tests
# run, then every part. Arguments go to cargo nextest alone and run only
# that part (scripts/test.sh -E 'test(tunnel)').
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace --bins
profile=()
[ -n "${CI:-}" ] && profile=(--profile ci)
if [ $# -gt 0 ]; then
  exec cargo nextest run --workspace "${profile[@]}" "$@"
fi
step() { echo "== $*"; "$@"; }
step cargo nextest run --workspace "${profile[@]}"
step scripts/console-test.sh
step scripts/api-fuzz.sh
step scripts/helm-test.sh
# These two are root's: the images' filesystems run in a mount namespace,
# and the end-to-end run builds a network namespace.
as_root() { if [ "$(id -u)" -eq 0 ]; then step "$@"; else step sudo -E "$@"; fi; }
as_root scripts/image-test.sh
as_root scripts/e2e-private-network.sh
step scripts/fuzz-smoke.sh
