#!/usr/bin/env bash
# Builds every plugin that ships with Fanwire into plugins/dist/*.wasm:
# the Rust plugins of this workspace (wasm32-wasip2 components, one cargo
# invocation per SDK world so the SDK is built with exactly that world, the
# plugins of one world in parallel) and the Python plugins (componentize-py):
# the event filter and the resolver of examples/resolver-component.
# Installs the Rust target and componentize-py itself.
# Usage: bash plugins/build.sh          build every plugin into dist/
#        bash plugins/build.sh --lint   clippy (-D warnings) instead, world by world,
#                                       and mypy --strict and the unit tests of the
#                                       Python plugins (python-sdk/test_plugins.py)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export CARGO_TARGET_DIR="${FANWIRE_WASM_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/wasm-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
dist="$here/dist"
mkdir -p "$dist"

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

# Every workspace member but the SDK is a plugin; its package name is its
# folder's name. Its world is the SDK feature its Cargo.toml asks for
# ("none": it uses wit-bindgen directly, so it can join any build).
declare -A world_of
plugins=$(sed -n '/^members = \[/,/^\]/p' Cargo.toml | grep -o '"[^"]*"' | tr -d '"' | grep -v '^sdk$')
for path in $plugins; do
  sdk="$(tr -d ' \n' < "$path/Cargo.toml" | grep -o 'fanwire-sdk={[^}]*}' || true)"
  world="$(grep -o 'features=\[[^]]*\]' <<<"$sdk" | tr -d '"[]' | sed 's/features=//' || true)"
  world_of[$path]="${world:-none}"
done

# cargo unifies the SDK's features across the packages of one invocation, so
# each invocation holds one world.
lint=false
if [[ "${1:-}" == --lint ]]; then lint=true; fi
build() { # packages...
  local args=() name
  for name in "$@"; do args+=(-p "$name"); done
  if $lint; then
    # `--release` reuses the build scripts and proc macros of the build.
    cargo clippy --quiet --locked --release --target wasm32-wasip2 --all-targets "${args[@]}" -- -D warnings
    return
  fi
  cargo build --quiet --locked --release --target wasm32-wasip2 "${args[@]}"
  for name in "$@"; do
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/${name//-/_}.wasm" "$dist/$name.wasm"
  done
}
# The plugins that use no SDK world build with the event filters. The
# test-only plugins (testing/*) keep the release profile's LTO: a profile of
# their own would compile wit-bindgen and every dependency a second time,
# which costs more on a cold build than LTO on a few small plugins.
for world in $(printf '%s\n' "${world_of[@]}" | grep -vx none | sort -u); do
  names=()
  for path in $plugins; do
    if [[ "${world_of[$path]}" == "$world" || ( "$world" == event-filter && "${world_of[$path]}" == none ) ]]; then
      names+=("$(basename "$path")")
    fi
  done
  build "${names[@]}"
done

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r python-sdk/requirements.txt
# The console script lands in the interpreter's scripts folder, which need not be on PATH.
componentize_py="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/componentize-py"

if $lint; then
  # The SDK itself, once per world.
  for world in $(printf '%s\n' "${world_of[@]}" | grep -vx none | sort -u); do
    cargo clippy --quiet --locked --release --target wasm32-wasip2 -p fanwire-sdk --features "$world" -- -D warnings
  done
  # The Python plugins and their helper: mypy --strict, then their unit
  # tests, in CPython against the bindings componentize-py generates (both
  # worlds merged, since the helper serves both).
  bindings="$(mktemp -d)"
  trap 'rm -rf "$bindings"' EXIT
  "$componentize_py" -q -d ../wit/v0.4.0 -w event-filter -w field-resolver bindings "$bindings"
  path="$bindings:python-sdk:python-filter:../examples/resolver-component"
  MYPYPATH="$path" python3 -m mypy --strict --no-error-summary \
    --cache-dir "${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/mypy-plugins" \
    python-sdk/fanwire_plugin.py python-sdk/test_plugins.py python-filter/app.py ../examples/resolver-component/tick.py
  PYTHONPATH="$path" python3 -B -m unittest -q python-sdk/test_plugins.py
  exit 0
fi

# The Python plugins (componentize-py, against the newest WIT, with the
# authoring helper python-sdk/ on the path): the event filter, and the
# resolver of examples/resolver-component. componentize-py works offline;
# --stub-wasi replaces the WASI imports of the Python runtime with traps,
# since the host offers plugins no WASI. Each is rebuilt only when its
# sources, the helper or the WIT are newer than its component (a build takes
# tens of seconds), into a temporary file renamed into place, so a running
# host that watches dist/ never loads half a component.
componentize() { # folder module world name
  local folder="$1" module="$2" world="$3" out="$dist/$4.wasm"
  if [[ -f "$out" && -z "$(find "$folder" python-sdk ../wit/v0.4.0 -type f \( -name '*.py' -o -name '*.wit' \) -newer "$out" -print -quit)" ]]; then
    return
  fi
  (cd "$folder" && "$componentize_py" -q -d "$here/../wit/v0.4.0" -w "$world" componentize --stub-wasi \
    -p . -p "$here/python-sdk" "$module" -o "$out.tmp")
  mv "$out.tmp" "$out"
}
componentize python-filter app event-filter python-filter
componentize ../examples/resolver-component tick field-resolver resolver-component

echo "plugins built into $dist:"
ls -l "$dist" | awk 'NR > 1 { printf "  %-28s %8d bytes\n", $9, $5 }'
