#!/usr/bin/env bash
# A bounded run of every fuzz target in fuzz/ (docs/fuzzing.md), from the
# committed seed corpus. Fails on any crash, timeout or out-of-memory of any
# target, printing the target, the failure and the input (base64).
#
#   FUZZ_SECONDS     seconds per target (default 60)
#   FUZZ_TARGET_DIR  where the instrumented build goes (default target/fuzz)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); runs on stable
# Rust: without a sanitizer (`--sanitizer none`) cargo fuzz uses no
# nightly-only flag. Inputs the run finds go to a temporary corpus, so the
# committed one stays as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz-smoke: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
BUILD=(--fuzz-dir fuzz --sanitizer none --target-dir "$TARGET_DIR")

started=$(date +%s)
echo "fuzz-smoke: building every target (instrumented, into $TARGET_DIR)"
cargo fuzz build "${BUILD[@]}"
built=$(date +%s)
echo "fuzz-smoke: build took $((built - started)) s"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failed=()
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  mkdir -p "$WORK/$target/corpus" "$WORK/$target/artifacts"
  log="$WORK/$target/log"
  status=0
  # The first corpus directory takes what the run finds; the committed one
  # is only read. -timeout: one input may take 10 s; -rss_limit_mb: 2 GiB.
  cargo fuzz run "${BUILD[@]}" "$target" "$WORK/$target/corpus" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$WORK/$target/artifacts/" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  coverage=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 || true)
  if [ "$status" = 0 ]; then
    printf 'fuzz-smoke: %-15s ok: %s runs in %s s (%s/s), %s\n' "$target" "${runs:-?}" "$SECONDS_PER_TARGET" \
      "${speed:-?}" "${coverage:-?}"
    continue
  fi
  failed+=("$target")
  echo "fuzz-smoke: $target FAILED (exit $status) after ${runs:-?} runs"
  grep -E -A12 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -40 || tail -40 "$log"
  found=0
  for artifact in "$WORK/$target/artifacts/"*; do
    [ -f "$artifact" ] || continue
    found=1
    echo "fuzz-smoke: $target input $(basename "$artifact") (base64):"
    base64 -w 0 "$artifact"
    echo
    mkdir -p "fuzz/artifacts/$target"
    cp "$artifact" "fuzz/artifacts/$target/"
    echo "fuzz-smoke: kept as fuzz/artifacts/$target/$(basename "$artifact");" \
      "reproduce with: cargo fuzz run --sanitizer none $target fuzz/artifacts/$target/$(basename "$artifact")"
  done
  if [ "$found" = 0 ]; then
    echo "fuzz-smoke: $target left no input; the end of its log:"
    tail -20 "$log"
  fi
done

echo "fuzz-smoke: $((built - started)) s to build, $(($(date +%s) - built)) s to run, $SECONDS_PER_TARGET s a target"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: every target passed"
