#!/usr/bin/env bash
# S1 (100 subscribers, 10,000 events of ~200 B back-to-back) against the
# release `fanwire` without plugins and with five WASM plugins, alternating,
# REPEAT times each; prints the loadgen result lines and the median
# deliveries/s of each. The load generator's clients are anonymous (empty
# connection_init), which the security modules would (rightly) deny, so the
# five plugins here are ones that let anonymous events through while doing
# per-event work: two subscription policies (scope-validator, rbac) and
# three per-event filters (template, redact-fields redacting a field, and a
# second template). Loopback only, bounded in time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/target}"
REPEAT="${REPEAT:-3}"
bash plugins/build.sh >/dev/null
cargo build --release --locked -p fanwire-server --bin fanwire -p fanwire-benches --bin loadgen
OUT="$(mktemp -d)"
cat >"$OUT/plain.toml" <<'TOML'
[limits]
queue_depth = 16384
TOML
cat >"$OUT/plugins.toml" <<TOML
[limits]
queue_depth = 16384
[plugin_runtime]
folder = "$ROOT/plugins/dist"
watch = false
[[plugins]]
path = "scope-validator.wasm"
kind = "subscription-policy"
[[plugins]]
path = "rbac.wasm"
kind = "subscription-policy"
[[plugins]]
path = "template.wasm"
kind = "event-filter"
[[plugins]]
name = "redact"
path = "redact-fields.wasm"
kind = "event-filter"
config = { fields = { "secret" = "pii:read" } }
[[plugins]]
name = "template-2"
path = "template.wasm"
kind = "event-filter"
TOML
for run in $(seq "$REPEAT"); do
  for kind in plain plugins; do
    log="$OUT/$kind-$run.log"
    "$CARGO_TARGET_DIR/release/fanwire" serve --schema benches/schema.graphql --listen 127.0.0.1:0 --config "$OUT/$kind.toml" >"$log" 2>&1 &
    pid=$!
    url=""
    for _ in $(seq 300); do
      url="$(sed -n 's/.* listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n1 || true)"
      [ -n "$url" ] && break
      sleep 0.1
    done
    [ -n "$url" ] || { cat "$log" >&2; kill "$pid"; exit 1; }
    timeout 300 "$CARGO_TARGET_DIR/release/loadgen" --url "ws://${url#http://}/graphql" --publish-url "$url/publish" \
      --server-pid "$pid" --label "S1/$kind/$run" --connections 100 --events 10000 --rate 0 --payload-bytes 200 | tee -a "$OUT/results.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
for kind in plain plugins; do
  printf '%s: median deliveries/s ' "$kind"
  grep "label=S1/$kind/" "$OUT/results.txt" | tr ' ' '\n' | sed -n 's/^deliveries_per_s=//p' | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
done
