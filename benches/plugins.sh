#!/usr/bin/env bash
# Plugin runtime benchmarks (engine/plugins/benches/plugins.rs): per-call
# overhead, instantiation with and without pooling, one event to 1,000
# subscriptions in 10 groups with and without the five security plugins,
# the time to load a new plugin version, with a cold and a warm compile
# cache, and what a component resolver adds per group per event
# (resolvers.rs; benches/resolvers.sh adds S1 with a Python resolver).
# Builds the plugins first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/target}"
bash plugins/build.sh >/dev/null
# The release profile: the same artefacts as the release `fanwire` binary
# (the bench profile would build wasmtime a second time).
cargo bench --locked --profile release -p fanwire-plugins --bench plugins
# Plugin load time with a cold and a warm compile cache.
cargo bench --locked --profile release -p fanwire-plugins --bench compile_cache
# Component resolvers per group per event.
cargo bench --locked --profile release -p fanwire-plugins --bench resolvers
