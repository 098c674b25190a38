#!/usr/bin/env bash
# Coverage-guided fuzzing of everything that parses untrusted input (fuzz/): the MCP
# entry point, fail-closed authorization (scope: no call without the scope), /register bodies, JWTs and configuration files. Each target runs for a
# bounded time (default 30 s; first argument), starting from the committed seeds
# (fuzz/seeds/<target>) and the corpus of earlier runs (fuzz/corpus/<target>, not
# committed). Any crash or panic fails the run and leaves its input under
# fuzz/artifacts/<target>/ (reproduce: scripts/fuzz.sh repro <target> <file>).
#
# cargo-fuzz is installed from crates.io when missing. It runs on the stable toolchain
# without sanitizers (-s none): the gateway forbids unsafe code but one audited FFI call,
# so the point is panics, aborts, hangs and runaway memory, which libFuzzer reports.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi
# cargo-fuzz passes a few unstable flags even without a sanitizer.
export RUSTC_BOOTSTRAP=1
TARGETS=(mcp_entry scope admin_bodies jwt config)

if [[ "${1:-}" == "repro" ]]; then
    exec cargo fuzz run -s none -O "$2" "$3"
fi
SECONDS_PER_TARGET="${1:-30}"

echo "== building fuzz targets"
cargo fuzz build -s none -O

status=0
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target"
    echo "== fuzzing $target for ${SECONDS_PER_TARGET}s"
    if ! cargo fuzz run -s none -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 2>"/tmp/fuzz-$target.log"; then
        status=1
        echo "!! $target found a crash; input under fuzz/artifacts/$target/"
        tail -40 "/tmp/fuzz-$target.log"
    else
        grep -E "^Done|stat::number_of_executed_units" "/tmp/fuzz-$target.log" | tail -1
    fi
done
rm -f "${TMPDIR:-/tmp}"/gateway-fuzz-*.db*
exit "$status"
