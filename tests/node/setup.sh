#!/usr/bin/env bash
# Installs what tests/node and the stock-client matrix need:
#   - the pinned npm packages (npm ci), skipped when node_modules was last
#     installed from this same package-lock.json;
#   - Debian's Chromium for the browser cells (apt-get), when /usr/bin/chromium
#     is missing (CHROMIUM_BIN names another one).
# Run by tests/e2e.sh and python/check.sh; exits non-zero if either install fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

stamp="$here/node_modules/.fanwire-package-lock.json"
if ! cmp -s "$here/package-lock.json" "$stamp"; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stamp"
fi

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  echo "setup: installing Debian's chromium for the browser cells of the client matrix"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  [[ -x "$chromium" ]] || { echo "setup: apt-get installed chromium but $chromium is missing" >&2; exit 1; }
fi
