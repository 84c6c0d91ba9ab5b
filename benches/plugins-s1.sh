#!/usr/bin/env bash
# S1 (100 subscribers, 10,000 events of ~200 B back-to-back) against the
# release `fanwire`, REPEAT times each, alternating:
#
#   plain    no authentication, no plugins (the standard S1);
#   jwt      the native JWT policy only (HS256), no plugins;
#   secured  the JWT policy and the five security modules: scope-validator
#            and rbac (subscription policies), tenant-isolation, row-filter
#            and federation (event filters, three WASM calls per event);
#   spread   `secured` with the clients spread over 10 principals (10
#            groups): each tick belongs to one principal, so the filters
#            must pass it to that principal's 10 clients and drop it for the
#            other 90;
#   resolver `plain` with the Python component resolver of
#            examples/resolver-component bound to `tick`: one call per event
#            (S1 is one group), which parses the tick and serialises it
#            again (it has no `payload` to upper-case). Not in the default
#            KINDS: `KINDS="plain resolver"` (benches/resolvers.sh runs it).
#
# The load generator signs a token per client (`--jwt-secret`) and stamps
# each tick with its owner's `user_id`, `tenant_id` and `federation_id`. In
# plain, jwt and secured every client is the same principal, so every tick
# is every client's own and the three deliver the same 1,000,000 frames:
# their deliveries/s compare directly, and `lost=0` means nothing was lost.
# In spread each client expects only its principal's ticks (`expected` is
# 100,000) and counts any other it receives as `leaked`; its deliveries/s is
# not comparable with the others (a tenth of the frames) and shows that the
# filters are right under load. Prints the loadgen result lines, then the
# median deliveries/s of each and secured / plain. Loopback only, bounded in time.
#
# MODE (default burst, S1's batches of 100) is the loadgen's publish mode:
# MODE=single publishes one event at a time, each waiting for its answer
# (S1-single, what users do), and also prints each kind's median publish
# call p50/p99 (each call includes the resolver's or filters' work).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/target}"
REPEAT="${REPEAT:-3}"
MODE="${MODE:-burst}"
KINDS="${KINDS:-plain jwt secured spread}"
SECRET="plugins-s1-bench-secret"
bash plugins/build.sh >/dev/null
cargo build --release --locked -p fanwire-server --bin fanwire -p fanwire-benches --bin loadgen
OUT="$(mktemp -d)"
cat >"$OUT/plain.toml" <<'TOML'
[limits]
queue_depth = 16384
TOML
cat >"$OUT/jwt.toml" <<TOML
[limits]
queue_depth = 16384
[auth.jwt]
algorithm = "HS256"
secret = "$SECRET"
TOML
cat >"$OUT/secured.toml" <<TOML
[limits]
queue_depth = 16384
[auth.jwt]
algorithm = "HS256"
secret = "$SECRET"
[plugin_runtime]
folder = "$ROOT/plugins/dist"
watch = false
[[plugins]]
path = "scope-validator.wasm"
kind = "subscription-policy"
[[plugins]]
path = "rbac.wasm"
kind = "subscription-policy"
config = { permissions = { tick = "tick:read" } }
[[plugins]]
path = "tenant-isolation.wasm"
kind = "event-filter"
[[plugins]]
path = "row-filter.wasm"
kind = "event-filter"
[[plugins]]
path = "federation.wasm"
kind = "event-filter"
TOML
cp "$OUT/secured.toml" "$OUT/spread.toml"
# The compile cache outlives the run (a Python component compiles for tens of
# seconds, once), in the target folder rather than the user's cache.
cat >"$OUT/resolver.toml" <<TOML
[limits]
queue_depth = 16384
[plugin_runtime]
folder = "$ROOT/plugins/dist"
watch = false
cache_dir = "$CARGO_TARGET_DIR/fanwire-bench/plugin-cache"
[[resolvers]]
field = "tick"
path = "resolver-component.wasm"
TOML
for run in $(seq "$REPEAT"); do
  for kind in $KINDS; do
    case "$kind" in
      plain | resolver) auth=() ;;
      spread) auth=(--jwt-secret "$SECRET" --principals 10) ;;
      *) auth=(--jwt-secret "$SECRET" --principals 1) ;;
    esac
    log="$OUT/$kind-$run.log"
    "$CARGO_TARGET_DIR/release/fanwire" serve --schema benches/schema.graphql --listen 127.0.0.1:0 --config "$OUT/$kind.toml" >"$log" 2>&1 &
    pid=$!
    url=""
    # Up to a minute: a cold compile cache compiles the Python resolver first.
    for _ in $(seq 600); do
      url="$(sed -n 's/.* listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n1 || true)"
      [ -n "$url" ] && break
      sleep 0.1
    done
    [ -n "$url" ] || { cat "$log" >&2; kill "$pid"; exit 1; }
    timeout 300 "$CARGO_TARGET_DIR/release/loadgen" --url "ws://${url#http://}/graphql" --publish-url "$url/publish" \
      --server-pid "$pid" --label "S1/$kind/$run" --connections 100 --events 10000 --rate 0 --payload-bytes 200 --mode "$MODE" \
      "${auth[@]}" | tee -a "$OUT/results.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
median() {
  grep "label=S1/$1/" "$OUT/results.txt" | tr ' ' '\n' | sed -n "s/^$2=//p" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "na"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for kind in $KINDS; do
  printf '%-8s median deliveries/s %s (runs: %s), server CPU s %s; lost %s, leaked %s in all runs\n' "$kind" "$(median "$kind" deliveries_per_s)" \
    "$(grep "label=S1/$kind/" "$OUT/results.txt" | tr ' ' '\n' | sed -n 's/^deliveries_per_s=//p' | paste -sd/ -)" \
    "$(median "$kind" server_cpu_s)" \
    "$(grep "label=S1/$kind/" "$OUT/results.txt" | tr ' ' '\n' | sed -n 's/^lost=//p' | awk '{ s += $1 } END { print s + 0 }')" \
    "$(grep "label=S1/$kind/" "$OUT/results.txt" | tr ' ' '\n' | sed -n 's/^leaked=//p' | awk '{ s += $1 } END { print s + 0 }')"
  if [[ "$MODE" == single ]]; then
    printf '%-8s median publish call p50 %s ms, p99 %s ms\n' "$kind" "$(median "$kind" call_p50_ms)" "$(median "$kind" call_p99_ms)"
  fi
done
# Each kind with a target, against plain from the same invocation.
if [[ " $KINDS " == *" plain "* ]]; then
  plain="$(median plain deliveries_per_s)"
  for kind in $KINDS; do
    case "$kind" in
      secured) target=80 ;;
      resolver) target=50 ;;
      *) continue ;;
    esac
    awk -v s="$(median "$kind" deliveries_per_s)" -v p="$plain" -v k="$kind" -v t="$target" \
      'BEGIN { printf "%s / plain: %.0f%% (target >= %d%%)\n", k, 100 * s / p, t }'
  done
fi
echo "raw results and server logs: $OUT"
