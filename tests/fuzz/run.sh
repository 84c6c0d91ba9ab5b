#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_SECONDS seconds each (default 20: a
# smoke run) on its committed corpus (corpus/<target>) and fails on any
# crash, printing the executions of each target. Installs what it needs: a
# nightly toolchain and cargo-fuzz.
#
#   FUZZ_SECONDS=1800 bash tests/fuzz/run.sh            # 30 minutes each
#   FUZZ_TARGETS="protocol prepare" bash tests/fuzz/run.sh
#
# New inputs the fuzzer finds go to a scratch corpus outside the clone
# ($FUZZ_CACHE/corpus/<target>), which later runs read too; the committed
# corpus is only read. A crashing input is saved in tests/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
# FUZZ_RUNS=N: a fixed number of executions from a fixed seed on the
# committed corpus alone, the same inputs every time (what CI runs: a smoke
# run that can only fail when the code changes, never by luck).
runs_fixed="${FUZZ_RUNS:-}"
read -r -a targets <<<"${FUZZ_TARGETS:-protocol prepare publish notify plugin_return resolver_answer}"
cache="${FUZZ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire}"
# Instrumented builds cannot share artefacts with normal builds.
export CARGO_TARGET_DIR="$cache/fuzz-target"
# Coverage instrumentation without AddressSanitizer: the code under test is
# safe Rust (a stack overflow or panic is caught either way), and ASan would
# double both the build and the time per execution.
sanitizer="${FUZZ_SANITIZER:-none}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Installed when missing, never updated here: a new nightly rebuilds everything.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

printf '==> building the fuzz targets\n'
cargo +nightly fuzz build --fuzz-dir . --sanitizer "$sanitizer"
failed=()
summary=()
for target in "${targets[@]}"; do
    scratch="$cache/fuzz-corpus/$target"
    budget=(-max_total_time="$seconds")
    if [ -n "$runs_fixed" ]; then
        scratch="$(mktemp -d)"
        budget=(-runs="$runs_fixed" -seed=1)
    fi
    mkdir -p "$scratch" "artifacts/$target"
    log="$cache/fuzz-logs/$target.log"
    mkdir -p "$(dirname "$log")"
    if [ -n "$runs_fixed" ]; then
        printf '==> fuzz %s for %s runs (seed 1)\n' "$target" "$runs_fixed"
    else
        printf '==> fuzz %s for %ss\n' "$target" "$seconds"
    fi
    dict=()
    [ -f "dict/$target.dict" ] && dict=(-dict="dict/$target.dict")
    status=0
    # The scratch corpus first: libFuzzer writes new inputs to the first directory.
    cargo +nightly fuzz run --fuzz-dir . --sanitizer "$sanitizer" "$target" "$scratch" "corpus/$target" -- \
        "${budget[@]}" -max_len=65536 -timeout=30 -rss_limit_mb=4096 \
        -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$(printf '%-14s %10s executions' "$target" "${runs:-?}")")
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        tail -n 60 "$log"
    fi
done

printf '\n%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: crashes in: ${failed[*]} (inputs in tests/fuzz/artifacts/, logs in $cache/fuzz-logs/)" >&2
    exit 1
fi
