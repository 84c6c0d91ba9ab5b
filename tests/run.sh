#!/usr/bin/env bash
# Sets up and runs every Fanwire test: formatting and lints, the Rust unit
# and integration suites, and the end-to-end suites with stock clients.
set -euo pipefail
cd "$(dirname "$0")/.."

# A build cache outside the clone, so repeated runs (and CI on this
# machine) reuse compiled dependencies; a fresh machine simply fills it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Each step says how long the one before it took, so a slow CI run shows
# where its time went.
started=$SECONDS
last=$SECONDS
step() {
  printf '\n==> %s   [previous step %ds, %ds in all]\n' "$*" $((SECONDS - last)) $((SECONDS - started))
  last=$SECONDS
}

step "rustfmt and clippy"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all --check
(cd plugins && cargo fmt --all --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
# The guest workspace, one SDK world at a time (as it builds).
bash plugins/build.sh --lint

step "services for the bus tests (PostgreSQL, Redis, NATS JetStream)"
bash tests/services.sh

step "the bundled WebAssembly plugins (the plugin runtime's tests load them)"
bash plugins/build.sh

step "Rust unit and integration tests"
# The Python extension (a cdylib with no Rust tests) is left to maturin in
# python/check.sh, which would build it again anyway (clippy covers it above).
cargo test --workspace --all-targets --locked --exclude fanwire-python

step "fuzz smoke: every target, 5,000 runs from a fixed seed on its committed corpus (tests/fuzz)"
FUZZ_RUNS="${FUZZ_RUNS:-5000}" bash tests/fuzz/run.sh

step "end-to-end tests with stock clients (graphql-ws on Node, gql on Python)"
# `cargo test` built the binary (the server's tests run it) with the dev
# profile's settings; `cargo build` would compile the workspace crates once
# more under another profile name (20 s) for the same code. The steps below
# (and python/check.sh) test this one.
export FANWIRE_BIN="$CARGO_TARGET_DIR/debug/fanwire"
test -x "$FANWIRE_BIN"
bash tests/e2e.sh

step "adversarial suite: hostile clients against the binary (tests/adversarial)"
# The debug binary built above: a release build would compile every
# dependency again (8.5 of a cold run's minutes) to test the same behaviour,
# and debug adds overflow checks. `tests/adversarial/run.sh` alone builds
# the release binary.
bash tests/adversarial/run.sh

step "Python package: maturin wheel, pytest over every serving mode, mypy --strict, stubtest"
bash python/check.sh
step "done"
