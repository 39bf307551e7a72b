#!/usr/bin/env bash
# Fuzzes every target of the fuzz/ crate for SECONDS each (default 20), starting from the
# committed seeds. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Stable Rust: libFuzzer with coverage feedback and no sanitizer (`--sanitizer none`; plain
# `cargo fuzz run` needs nightly). A crash or a failed assertion stops the run, is written to
# fuzz/artifacts/<target>/ and fails the script. New inputs the fuzzer finds go to
# fuzz/corpus/<target>/ (git-ignored); fuzz/seeds/<target>/ is only read.
#
# FUZZ_PROFILE=dev (default: cheapest to build, what CI runs) or release (several times more
# executions per second, for long runs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
CARGO_FUZZ_VERSION=0.13.2

start=$(date +%s)
if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION\$"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    # --debug: cargo-fuzz only drives cargo, so an unoptimised build of it costs nothing at run
    # time and installs in a fraction of the time.
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --debug
    echo "== installed in $(($(date +%s) - start))s"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

case "${FUZZ_PROFILE:-dev}" in
    dev) flags=(--sanitizer none --dev) ;;
    # 16 codegen units instead of cargo-fuzz's default 1 builds much faster on 2 cores for a
    # small loss of fuzzing speed.
    release) flags=(--sanitizer none --release --codegen-units 16) ;;
    *) echo "FUZZ_PROFILE must be dev or release" >&2; exit 2 ;;
esac

build=$(date +%s)
echo "== cargo fuzz build ${flags[*]}"
cargo fuzz build "${flags[@]}"
echo "== built in $(($(date +%s) - build))s"

root="$PWD/fuzz"
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "$root/corpus/$target"
    # The first corpus directory receives new inputs; the seeds are read only.
    cargo fuzz run "${flags[@]}" "$target" "$root/corpus/$target" "$root/seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "== fuzzing done in $(($(date +%s) - start))s"
