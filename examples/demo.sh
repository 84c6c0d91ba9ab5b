#!/usr/bin/env bash
# Builds the bundled WebAssembly plugins and the fanwire host, then runs the
# host with the demo schema, the event generator and two plugins
# (examples/standalone/demo-plugins.toml) on http://127.0.0.1:4000 (override
# with FANWIRE_LISTEN). Open the page and
# watch events arrive; Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/target}"
listen="${FANWIRE_LISTEN:-127.0.0.1:4000}"
bash plugins/build.sh
cargo build --release --locked -p fanwire-server --bin fanwire
echo
echo "Fanwire demo: open http://$listen/ in a browser (it subscribes by itself),"
echo "or point a graphql-ws client at ws://$listen/graphql. Publish your own events with:"
echo "  curl -X POST http://$listen/publish -d '{\"topic\":\"ticks:demo\",\"data\":{\"seq\":0,\"at\":\"now\",\"value\":42}}'"
echo
echo "Plugins: customer emails are redacted (redact-fields), drafts dropped (template)."
echo "Rebuild one with 'bash plugins/build.sh' and the running host reloads it."
echo
exec "$CARGO_TARGET_DIR/release/fanwire" serve --demo --config examples/standalone/demo-plugins.toml --listen "$listen"
