#!/usr/bin/env bash
# Bus and database benchmarks (issue 5), reported, never asserted:
#   db-outbox, db-notify  INSERT committed -> frame received, 1,000 subscribers,
#                         2,000 rows at 200/s (outbox table / NOTIFY payload)
#   cross-nats, cross-redis  POST /publish on node A -> frame on node B,
#                         1,000 subscribers on B, 2,000 events at 200/s
#   floor                 the same client against a server that only writes one
#                         prebuilt frame per socket per tick (both cores): what
#                         the kernel and the client cost, fanwire or not
#   local-memory          the same on one node with the in-process bus: what
#                         the client, the machine and the host cost without a bus
#   s1-*                  S1 (100 subscribers, 10,000 events of ~200 B,
#                         back-to-back in batches of 100) on one node and
#                         with the subscribers spread over two nodes
# Needs the machine's PostgreSQL, Redis and NATS (started if down) and psql.
# Traffic stays on 127.0.0.1; every run is bounded in time.
#   SCENARIOS="db-outbox cross-nats" benches/bus.sh
#   RATE=20 EVENTS=400 benches/bus.sh   # latency runs at a rate the host sustains
#   FANWIRE_BIN=... BUS_BENCH_BIN=... benches/bus.sh   # given builds, no cargo build
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/target}"
SCENARIOS="${SCENARIOS:-floor local-memory db-outbox db-notify cross-nats cross-redis s1-memory s1-nats-1 s1-nats-2 s1-redis-1 s1-redis-2}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
# Events and events/s of the latency runs (floor, local-memory, db-*, cross-*).
RATE="${RATE:-200}"
EVENTS="${EVENTS:-2000}"
OUT="${OUT:-$CARGO_TARGET_DIR/fanwire-bench/bus-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"

# FANWIRE_BIN / BUS_BENCH_BIN: other builds (e.g. to compare two branches); no build then.
if [ -z "${FANWIRE_BIN:-}" ] || [ -z "${BUS_BENCH_BIN:-}" ]; then
    cargo build --release --locked -p fanwire-server --bin fanwire --example bus_bench
fi
# Copies: another build in the same target directory must not swap the
# binaries under a running benchmark.
cp "${FANWIRE_BIN:-$CARGO_TARGET_DIR/release/fanwire}" "$OUT/fanwire"
cp "${BUS_BENCH_BIN:-$CARGO_TARGET_DIR/release/examples/bus_bench}" "$OUT/bus_bench"
FANWIRE="$OUT/fanwire"
BENCH="$OUT/bus_bench"
bash tests/services.sh
psql "$PG_URL" -q -v ON_ERROR_STOP=1 -f docs/postgres.sql >/dev/null
ulimit -n 65536 2>/dev/null || true

cat >"$OUT/schema.graphql" <<'GRAPHQL'
type Query { ok: Boolean }
type Subscription {
  tick(topic: String! = "bench"): Tick @topic(name: "ticks:{topic}")
  row(stream: String! = "bench"): RowChange @topic(name: "rows:{stream}")
}
type Tick { seq: Int! ts: Float! pad: String }
type RowChange { op: String! new: Tick }
GRAPHQL

NODES=()
stop_nodes() {
    for pid in "${NODES[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NODES[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODES=()
}
trap stop_nodes EXIT

# node NAME BUS-TOML-LINES [flags...]: starts a node, sets ADDR.
node() {
    local name=$1 bus=$2
    shift 2
    cat >"$OUT/$name.toml" <<TOML
[server]
schema = "schema.graphql"
[limits]
queue_depth = 16384
max_connections = 12000
connections_per_second = 100000.0
connection_burst = 20000.0
[bus]
$bus
TOML
    "$FANWIRE" serve --config "$OUT/$name.toml" --listen 127.0.0.1:0 "$@" \
        >"$OUT/$name.out" 2>"$OUT/$name.log" &
    NODES+=($!)
    for _ in $(seq 1 300); do
        ADDR=$(sed -n 's|^fanwire listening on http://||p' "$OUT/$name.out")
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "node $name did not start; see $OUT/$name.log" >&2
    exit 1
}

run() { "$BENCH" "$@" | tee -a "$OUT/results.txt"; }
at_rate() { echo "$1@${RATE}/s"; }

# drop_stream KIND NAME: deletes a run's stream from the shared broker.
drop_stream() {
    if [ "$1" = redis ]; then
        redis-cli -p 6379 DEL "$2" >/dev/null
    elif [ "$1" = nats ]; then
        # JetStream's API is plain request/reply; PONG means it was processed.
        exec 3<>/dev/tcp/127.0.0.1/4222
        printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$2" >&3
        timeout 5 grep -m1 -q PONG <&3 || true
        exec 3>&-
    fi
}

uniq_name() { echo "bench_$1_$$_$RANDOM"; }

for scenario in $SCENARIOS; do
    echo "== $scenario" >&2
    case "$scenario" in
    db-outbox | db-notify)
        table=$(uniq_name rows)
        if [ "$scenario" = db-outbox ]; then
            outbox=$(uniq_name outbox)
            psql "$PG_URL" -q -v ON_ERROR_STOP=1 -c "SELECT fanwire_create_outbox('$outbox')" >/dev/null
            trigger="fanwire_row_change('rows:bench', 'outbox', '$outbox')"
            flags=(--pg-url "$PG_URL" --pg-outbox "$outbox")
        else
            trigger="fanwire_row_change('rows:bench', 'notify', '$table')"
            flags=(--pg-url "$PG_URL" --pg-channel "$table")
        fi
        psql "$PG_URL" -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE $table (seq bigint, ts float8, pad text);
CREATE TRIGGER fanwire AFTER INSERT ON $table FOR EACH ROW EXECUTE FUNCTION $trigger;
SQL
        node db 'kind = "memory"' "${flags[@]}"
        run --label "$(at_rate "$scenario")" --ws "ws://$ADDR/graphql" --connections 1000 \
            --pg-url "$PG_URL" --pg-table "$table" --events "$EVENTS" --rate "$RATE"
        stop_nodes
        psql "$PG_URL" -q -c "DROP TABLE $table" >/dev/null
        [ "$scenario" = db-outbox ] && psql "$PG_URL" -q -c "DROP TABLE $outbox" >/dev/null
        ;;
    floor)
        run --label "$(at_rate "$scenario")" --floor --connections 1000 \
            --events "$EVENTS" --rate "$RATE"
        ;;
    local-memory)
        node a 'kind = "memory"'
        run --label "$(at_rate "$scenario")" --ws "ws://$ADDR/graphql" --connections 1000 \
            --publish "http://$ADDR/publish" --events "$EVENTS" --rate "$RATE"
        stop_nodes
        ;;
    cross-nats | cross-redis)
        kind=${scenario#cross-}
        stream=$(uniq_name fw)
        bus="kind = \"$kind\"
stream = \"$stream\"
subject = \"$stream.events\""
        node a "$bus"; a=$ADDR
        node b "$bus"; b=$ADDR
        run --label "$(at_rate "$scenario")" --ws "ws://$b/graphql" --connections 1000 \
            --publish "http://$a/publish" --events "$EVENTS" --rate "$RATE"
        stop_nodes
        drop_stream "$kind" "$stream"
        ;;
    s1-*)
        spec=${scenario#s1-}
        kind=${spec%-*}
        count=${spec##*-}
        [ "$kind" = memory ] && count=1
        stream=$(uniq_name fw)
        bus="kind = \"$kind\"
stream = \"$stream\"
subject = \"$stream.events\""
        ws=()
        node a "$bus"; a=$ADDR; ws+=(--ws "ws://$a/graphql")
        if [ "$count" = 2 ]; then node b "$bus"; ws+=(--ws "ws://$ADDR/graphql"); fi
        run --label "$scenario" "${ws[@]}" --connections 100 \
            --publish "http://$a/publish" --events 10000 --rate 0 --batch 100
        stop_nodes
        drop_stream "$kind" "$stream"
        ;;
    *) echo "unknown scenario $scenario" >&2; exit 1 ;;
    esac
done
echo "results and logs: $OUT" >&2
