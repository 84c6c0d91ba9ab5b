#!/usr/bin/env bash
# Builds the fanwire wheel with maturin and checks it in a venv of its own:
# pytest (warnings are errors, a per-test timeout), mypy --strict on the
# package, its tests and the examples, and stubtest of the native module
# against its stub. pytest also runs every README snippet and example as
# written, each in a fresh venv with the wheel and its extra. The bus,
# source and plugin tests need PostgreSQL, NATS and Redis (started here by
# tests/services.sh when down), the `fanwire` binary (built here) and the
# bundled plugins (`bash plugins/build.sh`, which tests/run.sh runs first);
# a test fails, never skips, when one is missing.
#
#   bash python/check.sh            (tests/run.sh runs this)
#
# The venv lives outside the clone (FANWIRE_PY_VENV, default
# ~/.cache/fanwire/py-venv) so repeated runs reuse it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fanwire"
venv="${FANWIRE_PY_VENV:-$cache/py-venv}"
wheels="$cache/wheels"

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements-dev.txt"

echo "-- building the wheel (maturin)"
rm -rf "$wheels"
(cd "$here" && "$venv/bin/maturin" build --quiet --out "$wheels")
wheel="$(ls "$wheels"/fanwire-*.whl)"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
# The snippet tests install it again, with each extra, into fresh venvs.
export FANWIRE_WHEEL="$wheel"

# From a neutral folder, so `import fanwire` is the installed wheel, not the source tree.
cd "$(mktemp -d)"
"$venv/bin/python" -c 'import fanwire, sys; assert "site-packages" in fanwire.__file__, fanwire.__file__'

echo "-- stubtest fanwire._native"
"$venv/bin/python" -m mypy.stubtest fanwire._native

echo "-- mypy --strict: package, tests, examples"
(cd "$here" && "$venv/bin/mypy" --strict --cache-dir "$cache/mypy" fanwire tests \
  ../examples/subscriptions-fastapi ../examples/subscriptions-starlette ../examples/subscriptions-custom)

echo "-- services and the fanwire binary (a second node for the bus tests)"
bash "$here/../tests/services.sh"
# tests/run.sh hands over the binary its `cargo test` built.
if [[ -z "${FANWIRE_BIN:-}" ]]; then
  (cd "$here/.." && cargo build --quiet --locked -p fanwire-server --bin fanwire)
  export FANWIRE_BIN="${CARGO_TARGET_DIR:-$cache/target}/debug/fanwire"
fi

echo "-- the client matrix's Node clients and Chromium (tests/node/setup.sh)"
bash "$here/../tests/node/setup.sh"

echo "-- pytest"
(cd "$here" && "$venv/bin/pytest" -p no:cacheprovider tests)
