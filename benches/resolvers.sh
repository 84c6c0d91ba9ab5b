#!/usr/bin/env bash
# Component resolvers (issue 13's figures), in one command:
#   1. engine/plugins/benches/resolvers.rs: what a Rust and a Python
#      component resolver add per group per event through the engine, beside
#      no resolver and a native one, in alternating rounds (in process);
#   2. engine/plugins/benches/compile_cache.rs: plugin load time with a cold
#      and a warm compile cache (the Python filter and resolver, a Rust filter);
#   3. benches/plugins-s1.sh with KINDS="plain resolver": S1 against the
#      release `fanwire`, plain and with the Python resolver, REPEAT (3)
#      times each, alternating, and the ratio of the medians; in S1's
#      batches, then one publish at a time (MODE=single, what users do).
# Builds the plugins first. SKIP_S1=1 runs 1 and 2 only.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/target}"
bash plugins/build.sh >/dev/null
cargo bench --locked --profile release -p fanwire-plugins --bench resolvers
cargo bench --locked --profile release -p fanwire-plugins --bench compile_cache
if [[ -z "${SKIP_S1:-}" ]]; then
  KINDS="plain resolver" bash benches/plugins-s1.sh
  MODE=single KINDS="plain resolver" bash benches/plugins-s1.sh
fi
