#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60), one after another.
# Exits non-zero if any target finds something (crash inputs land in fuzz/artifacts/<target>/).
# Usage: fuzz/run-all.sh [SECONDS]
#
# The decoders under test are safe Rust, so AddressSanitizer finds nothing the fuzzer's
# own checks (panics, overflow with debug assertions, memory and time limits) do not, and
# it doubles the build time: it is off unless ARCA_FUZZ_SANITIZER=address asks for it.
set -uo pipefail

secs=${1:-60}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
cd "$(dirname "$0")" || exit 1

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); this lets stable rustc accept them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || exit 1
fi
sanitizer=${ARCA_FUZZ_SANITIZER:-none}
cargo fuzz build --sanitizer "$sanitizer" || exit 1

failed=()
for src in fuzz_targets/*.rs; do
    target=$(basename "$src" .rs)
    mkdir -p "corpus/$target"
    # corpus/<target> grows between runs; seeds/<target> (valid encodings) is only read.
    dirs=("corpus/$target")
    [[ -d seeds/$target ]] && dirs+=("seeds/$target")
    echo "=== $target: ${secs}s"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- -max_total_time="$secs" -rss_limit_mb=2048; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (a finding: input in fuzz/artifacts/<target>/; or the target did not build)" >&2
    exit 1
fi
echo "all targets ran ${secs}s each without a finding"
