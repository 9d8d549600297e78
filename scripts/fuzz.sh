#!/usr/bin/env bash
# Fuzzes the parsers of everything a user types (locations, sizes, the whole command
# line with its durations, URLs and globs, filter patterns) with cargo-fuzz, each target
# for SECONDS (default 60). The properties checked live in src/fuzzing.rs.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs on stable Rust without sanitizers (`-s none`); needs a C++ compiler for libFuzzer.
# Findings are left in tests/fuzz/artifacts/TARGET/; replay one with
#   cargo fuzz run --fuzz-dir tests/fuzz -s none TARGET tests/fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(location size command_line filter)

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION..." >&2
    cargo install "cargo-fuzz@$CARGO_FUZZ_VERSION" --locked --quiet
fi

for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s" >&2
    cargo fuzz run --fuzz-dir tests/fuzz -s none "$target" -- \
        -max_total_time="$seconds" -max_len=512 -print_final_stats=1
done
