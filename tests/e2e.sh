#!/usr/bin/env bash
# Runs the end-to-end suites against a built fanwire binary:
#   tests/node    the graphql-ws reference client (also sending a JWT to a
#                 server with [auth.jwt]), and the stock-client matrix's
#                 binary half: graphql-ws, Apollo, urql,
#                 subscriptions-transport-ws and the demo page in headless
#                 Chromium (node --test)
#   tests/python  gql over both WebSocket subprotocols and with its default
#                 (none named), sending a JWT, and fields computed by
#                 resolver components (examples/resolver-component) (pytest)
# The matrix's Python-mode half runs from python/check.sh (it needs the wheel).
#
# Usage: FANWIRE_BIN=/path/to/fanwire tests/e2e.sh
# Installs the suites' dependencies first (tests/node/setup.sh: npm ci and
# Debian's chromium; pip install -r), which is a no-op when they are already
# in place. Exits non-zero if either suite fails; both suites run even when
# the first one fails.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -z "${FANWIRE_BIN:-}" ]]; then
  echo "e2e: FANWIRE_BIN is not set; build with 'cargo build -p fanwire-server --bin fanwire' and point it at the binary" >&2
  exit 2
fi
if [[ ! -x "$FANWIRE_BIN" ]]; then
  echo "e2e: FANWIRE_BIN=$FANWIRE_BIN is not an executable file" >&2
  exit 2
fi
# The suites run from their own folders, so a relative path must not break.
FANWIRE_BIN="$(cd "$(dirname "$FANWIRE_BIN")" && pwd)/$(basename "$FANWIRE_BIN")"
export FANWIRE_BIN

# The venv python/check.sh makes (and reuses): nothing goes into the system interpreter.
venv="${FANWIRE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/py-venv}"

install() {
  bash "$here/node/setup.sh" || return 1
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/python/requirements.txt" || return 1
}

if ! install; then
  echo "e2e: installing the suites' dependencies failed" >&2
  exit 2
fi

status=0

echo "== node: graphql-ws, and the client matrix against the binary =="
(cd "$here/node" && npm test --silent) || status=1

echo "== python: gql =="
(cd "$here/python" && "$venv/bin/python" -m pytest) || status=1

if [[ $status -ne 0 ]]; then
  echo "e2e: FAILED" >&2
else
  echo "e2e: both suites passed"
fi
exit $status
