#!/usr/bin/env bash
# Runs the adversarial suite: builds the release `fanwire` binary, copies it
# out of the shared target dir (another build may replace it mid-run), makes
# the suite's venv and runs pytest with a per-test timeout.
#
# Usage: bash tests/adversarial/run.sh [pytest args, e.g. -k auth]
# FANWIRE_BIN=/path/to/fanwire skips the build and tests that binary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fanwire"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

if [[ -z "${FANWIRE_BIN:-}" ]]; then
  (cd "$root" && cargo build --release --locked -p fanwire-server --bin fanwire)
  FANWIRE_BIN="$(mktemp -d)/fanwire"
  cp "$CARGO_TARGET_DIR/release/fanwire" "$FANWIRE_BIN"
fi
export FANWIRE_BIN

venv="$cache/adversarial-venv"
if [[ ! -x "$venv/bin/python" ]]; then
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"

# Each test is bounded (pytest-timeout); the suite opens a few hundred sockets.
ulimit -n 4096 2>/dev/null || true
cd "$here"
exec "$venv/bin/python" -m pytest --timeout=300 "$@"
