#!/usr/bin/env bash
# Builds every plugin that ships with Fanwire into plugins/dist/*.wasm:
# the Rust plugins of this workspace (wasm32-wasip2 components, one cargo
# invocation each so the SDK is built with exactly that plugin's world) and
# the Python plugin (componentize-py). Installs the Rust target and
# componentize-py itself. Usage: bash plugins/build.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export CARGO_TARGET_DIR="${FANWIRE_WASM_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/wasm-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
dist="$here/dist"
mkdir -p "$dist"

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

# Every workspace member but the SDK is a plugin; its package name is its
# folder's name.
plugins=$(sed -n '/^members = \[/,/^\]/p' Cargo.toml | grep -o '"[^"]*"' | tr -d '"' | grep -v '^sdk$')
for path in $plugins; do
  name="$(basename "$path")"
  cargo build --quiet --locked --release --target wasm32-wasip2 -p "$name"
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${name//-/_}.wasm" "$dist/$name.wasm"
done

# The Python event filter. componentize-py works offline; --stub-wasi
# replaces the WASI imports of the Python runtime with traps, since the host
# offers plugins no WASI. It stays built against wit/v0.1.0: the host loads
# 0.1 and 0.2 side by side, and a real 0.1 component keeps that tested.
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r python-filter/requirements.txt
python_out="$dist/python-filter.wasm"
if [[ ! -f "$python_out" || -n "$(find python-filter ../wit/v0.1.0 -newer "$python_out" -type f -print -quit)" ]]; then
  # The console script lands in the interpreter's scripts folder, which need not be on PATH.
  componentize="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/componentize-py"
  (cd python-filter && "$componentize" -d ../../wit/v0.1.0 -w event-filter componentize --stub-wasi app -o "$python_out.tmp")
  mv "$python_out.tmp" "$python_out"
fi

echo "plugins built into $dist:"
ls -l "$dist" | awk 'NR > 1 { printf "  %-28s %8d bytes\n", $9, $5 }'
