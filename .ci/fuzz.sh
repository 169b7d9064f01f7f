#!/usr/bin/env bash
# Fuzzes the parsers that face the outside (tests/fuzz): device payloads and topics, WeChat's
# encrypted user info, and access tokens, each for a bounded time; fails on any crash, panic
# or broken property, leaving the input in tests/fuzz/artifacts/<target>/.
#
# Stable Rust is enough: with `--sanitizer none` cargo fuzz passes only stable rustc flags
# (the coverage instrumentation, `-Cpasses=sancov-module`, is stable); the address sanitizer
# would need `-Zsanitizer` and so nightly. Our targets are safe Rust, where ASan finds little
# that a panic does not already show, and overflow checks (`--debug-assertions`) stay on.
#
# IOTBIND_FUZZ_SECS sets the seconds per target (default 20: five targets, under two minutes
# of fuzzing). The corpus grows in tests/fuzz/corpus/<target> (not committed; cache it in CI
# to start each run where the last one stopped); the committed seeds are in tests/fuzz/seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${IOTBIND_FUZZ_SECS:-20}"
TARGETS=(telemetry command_result topic wechat_decrypt access_token)
FUZZ=(--fuzz-dir tests/fuzz --sanitizer none --debug-assertions)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it into ~/.cargo/bin"
    cargo install cargo-fuzz --locked
fi

cargo fuzz build "${FUZZ[@]}"

for target in "${TARGETS[@]}"; do
    echo "--- fuzzing $target for ${SECS}s"
    corpus="tests/fuzz/corpus/$target"
    mkdir -p "$corpus"
    # The dictionary of JSON tokens helps every target whose input is JSON or carries it.
    dict=()
    [ "$target" = topic ] || dict=(-dict=tests/fuzz/json.dict)
    # -timeout: an input taking 10 s is a hang, and a failure like a crash. libFuzzer's
    # progress lines are many; the log keeps them, the CI output shows the rest.
    log="tests/fuzz/corpus/$target.log"
    status=0
    cargo fuzz run "${FUZZ[@]}" "$target" "$corpus" "tests/fuzz/seeds/$target" -- \
        -max_total_time="$SECS" -timeout=10 -print_final_stats=1 "${dict[@]}" \
        >"$log" 2>&1 || status=$?
    grep -v -e '^#[0-9]' -e '^INFO:' "$log" | tail -n 60 || true
    if [ "$status" -ne 0 ]; then
        echo "FATAL: fuzz target $target failed; the input is in tests/fuzz/artifacts/$target/." >&2
        echo "Reproduce: cargo fuzz run ${FUZZ[*]} $target <artifact>; then add it as a" >&2
        echo "regression test beside the parser." >&2
        exit 1
    fi
done
echo "all ${#TARGETS[@]} fuzz targets ran ${SECS}s each without a failure"
