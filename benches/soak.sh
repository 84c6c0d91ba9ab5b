#!/usr/bin/env bash
# The soak: MINUTES (default 10) of churning connections, subscriptions and
# publishes, with slow and never-reading clients, against the release
# `fanwire`; prints RSS, descriptors, /healthz counts and drops every minute
# and fails if any grows without bound (see benches/README.md, "Soak").
#
# Usage: bash benches/soak.sh        MINUTES=30 bash benches/soak.sh
# FANWIRE_BIN=/path/to/fanwire skips the build. SEED picks the client mix.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fanwire"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

if [[ -z "${FANWIRE_BIN:-}" ]]; then
  (cd "$root" && cargo build --release --locked -p fanwire-server --bin fanwire)
  FANWIRE_BIN="$(mktemp -d)/fanwire"
  cp "$CARGO_TARGET_DIR/release/fanwire" "$FANWIRE_BIN"
fi
export FANWIRE_BIN

# The adversarial suite's venv: the same client library (websockets).
venv="$cache/adversarial-venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/tests/adversarial/requirements.txt"

ulimit -n 8192 2>/dev/null || true
exec "$venv/bin/python" "$here/soak.py"
