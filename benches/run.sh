#!/usr/bin/env bash
# Fanwire's benchmarks in one command: builds the release binaries, installs
# the Node baseline, runs every scenario (S1, S1d, S1-single, S1-conc, S2-200,
# S2-20, S3, S1-mem; see benches/README.md) against fanwire, the Node
# baseline and `floor` (a stand-in server that only writes the frames: the
# lower bound), a fresh server process per run, then the criterion dispatch
# bench, and prints medians with fanwire / baseline and fanwire / floor ratios.
#
#   benches/run.sh                  # everything, each scenario REPEAT times
#   REPEAT=1 benches/run.sh         # quicker, one run per scenario
#   SCENARIOS="S1 S3" benches/run.sh
#   SERVERS="fanwire floor" SCENARIOS="S2-200 S2-20" benches/run.sh
#   SKIP_CRITERION=1 benches/run.sh
#   FANWIRE_BIN=/path/to/other/fanwire SERVERS=fanwire benches/run.sh   # another build alone
#   FLOOR_WRITES=direct benches/run.sh  # floor's writes in every scenario (default: per scenario, see floor_writes)
#   MEM_IDLE_S=10 SCENARIOS=S1-mem benches/run.sh   # S1-mem's idle wait (default 5 s)
#
# Raw result lines, server logs and configs go to $OUT (printed at the end).
# Every load generator run only talks to 127.0.0.1 and is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
REPEAT="${REPEAT:-3}"
SCENARIOS="${SCENARIOS:-S1 S1d S1-single S1-conc S2-200 S2-20 S3 S1-mem}"
SERVERS="${SERVERS:-fanwire baseline floor}"
FLOOR_WRITES="${FLOOR_WRITES:-}"
MEM_IDLE_S="${MEM_IDLE_S:-5}"
OUT="${OUT:-$TARGET/fanwire-bench/$(date +%Y%m%d-%H%M%S)}"
SCHEMA="$ROOT/benches/schema.graphql"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"

log() { printf '==> %s\n' "$*" >&2; }

log "building release binaries (target dir: $TARGET)"
cargo build --release -p fanwire-server --bin fanwire -p fanwire-benches --bin loadgen --bin floor
if [ -z "${SKIP_CRITERION:-}" ]; then
  cargo bench -p fanwire-benches --bench dispatch --no-run
fi
FANWIRE="${FANWIRE_BIN:-$TARGET/release/fanwire}"
LOADGEN="$TARGET/release/loadgen"
FLOOR="$TARGET/release/floor"

if [[ " $SERVERS " == *" baseline "* ]]; then
  log "installing the Node baseline (npm ci)"
  (cd benches/baseline && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# S3 holds 10,000 sockets in the load generator and as many in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10500 ]; then
  echo "run.sh: S3 needs 'ulimit -n' >= 10500 (have $(ulimit -n))" >&2
  exit 1
fi

# One config for every fanwire run. queue_depth: S1 publishes 10,000 events
# back-to-back, faster than clients read them; with the default (1024) the
# slow-consumer policy would drop the oldest results on purpose, and S1
# measures throughput, not that policy. The connection limits let S3 open
# 10,000 sockets in a few seconds.
CONFIG="$OUT/fanwire.toml"
cat >"$CONFIG" <<'EOF'
[limits]
queue_depth = 16384
max_connections = 12000
connections_per_second = 100000.0
connection_burst = 20000.0
EOF

SERVER_PID=""
SERVER_URL=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

# floor_writes SCENARIO: floor's faster way of writing in SCENARIO, as
# measured (benches/README.md, "The floor"): direct writes from the publishing
# task when the machine keeps up with the rate (S2-20), a writer task per
# socket otherwise, since those coalesce the events a socket fell behind on
# into one write. FLOOR_WRITES overrides it.
floor_writes() {
  if [ -n "$FLOOR_WRITES" ]; then echo "$FLOOR_WRITES"; return; fi
  case "$1" in
    S2-20) echo direct ;;
    *) echo tasks ;;
  esac
}

# start_server KIND LOGFILE SCENARIO: starts fanwire, the baseline or floor on a free port.
start_server() {
  local kind="$1" logfile="$2" scenario="$3"
  # Created here: the background child opens it only when it gets to run.
  : >"$logfile"
  case "$kind" in
    fanwire) "$FANWIRE" serve --schema "$SCHEMA" --listen 127.0.0.1:0 --config "$CONFIG" >"$logfile" 2>&1 & ;;
    baseline) node benches/baseline/server.mjs serve --schema "$SCHEMA" --listen 127.0.0.1:0 --config "$CONFIG" >"$logfile" 2>&1 & ;;
    floor) "$FLOOR" --listen 127.0.0.1:0 --writes "$(floor_writes "$scenario")" >"$logfile" 2>&1 & ;;
    *) echo "run.sh: unknown server $kind (fanwire, baseline, floor)" >&2; exit 1 ;;
  esac
  SERVER_PID=$!
  SERVER_URL=""
  for _ in $(seq 300); do
    SERVER_URL="$(sed -n 's/.* listening on \(http:\/\/[^ ]*\).*/\1/p' "$logfile" | head -n1 || true)"
    [ -n "$SERVER_URL" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "run.sh: $kind did not start; its log:" >&2
  cat "$logfile" >&2
  exit 1
}

# The load generator's arguments per scenario (the table in benches/README.md).
scenario_args() {
  local s1="--connections 100 --events 10000 --payload-bytes 200"
  case "$1" in
    S1) echo "$s1 --mode burst" ;;
    S1d) echo "$s1 --mode burst --distinct 100" ;;
    S1-single) echo "$s1 --mode single" ;;
    S1-conc) echo "$s1 --mode concurrent --publishers 8" ;;
    S2-200) echo "--connections 1000 --events 2000 --mode single --rate 200 --payload-bytes 200" ;;
    S2-20) echo "--connections 1000 --events 400 --mode single --rate 20 --payload-bytes 200" ;;
    S3) echo "--connections 10000 --idle" ;;
    S1-mem) echo "$s1 --mode burst --idle-after $MEM_IDLE_S" ;;
    *) echo "run.sh: unknown scenario $1" >&2; exit 1 ;;
  esac
}
for scenario in $SCENARIOS; do scenario_args "$scenario" >/dev/null; done

for scenario in $SCENARIOS; do
  for run in $(seq "$REPEAT"); do
    for kind in $SERVERS; do
      label="$scenario/$kind/$run"
      log "$label"
      start_server "$kind" "$OUT/${scenario}-${kind}-${run}.log" "$scenario"
      hostport="${SERVER_URL#http://}"
      # shellcheck disable=SC2046 # the scenario's arguments split on purpose
      if ! timeout 900 "$LOADGEN" --url "ws://$hostport/graphql" --publish-url "$SERVER_URL/publish" \
        --server-pid "$SERVER_PID" --label "$label" $(scenario_args "$scenario") | tee -a "$RESULTS"; then
        echo "RESULT label=$label failed=1" | tee -a "$RESULTS"
      fi
      stop_server
    done
  done
done

if [ -z "${SKIP_CRITERION:-}" ]; then
  log "criterion: dispatch without sockets"
  cargo bench -p fanwire-benches --bench dispatch 2>&1 | tee "$OUT/criterion.txt" |
    grep -E '^dispatch/|time:|thrpt:' >&2 || true
fi

# median SCENARIO KIND KEY: the median of KEY over the runs of SCENARIO/KIND.
median() {
  grep "^RESULT label=$1/$2/" "$RESULTS" |
    tr ' ' '\n' | sed -n "s/^$3=//p" | grep -E '^[0-9.]+$' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "na"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# criterion_us ID: the median estimate of dispatch/ID in microseconds.
criterion_us() {
  local file="$TARGET/criterion/dispatch/$1/new/estimates.json"
  [ -f "$file" ] || { echo na; return; }
  sed -nE 's/.*"median":\{"confidence_interval":\{[^}]*\},"point_estimate":([0-9.eE+-]+).*/\1/p' "$file" |
    awk '{ printf "%.2f", $1 / 1000 }'
}

row() { # scenario metric fanwire baseline floor target
  awk -v s="$1" -v m="$2" -v f="$3" -v b="$4" -v fl="$5" -v t="$6" 'BEGIN {
    num = "^[0-9.]+$"
    rb = (f ~ num && b ~ num && b + 0 > 0) ? sprintf("%.3g", f / b) : "-"
    rf = (f ~ num && fl ~ num && fl + 0 > 0) ? sprintf("%.3g", f / fl) : "-"
    printf "%-10s %-24s %12s %12s %12s %9s %9s   %s\n", s, m, f, b, fl, rb, rf, t
  }'
}

echo
echo "Fanwire benchmarks: medians of $REPEAT run(s); ratios = fanwire / baseline, fanwire / floor. Raw results: $RESULTS"
printf '%-10s %-24s %12s %12s %12s %9s %9s   %s\n' scenario metric fanwire baseline floor fw/base fw/floor target
for scenario in $SCENARIOS; do
  # r METRIC KEY [TARGET]: one row of KEY's medians for the three servers.
  r() { row "$scenario" "$1" "$(median "$scenario" fanwire "$2")" "$(median "$scenario" baseline "$2")" \
    "$(median "$scenario" floor "$2")" "${3:-}"; }
  case "$scenario" in
    S1 | S1d | S1-single | S1-conc | S2-200 | S2-20)
      target=""
      [ "$scenario" = S1 ] && target=">= 1,000,000"
      [ "$scenario" = S1d ] && target="(100 distinct groups)"
      r "deliveries/s" deliveries_per_s "$target"
      r "events/s achieved" publish_rate "$(case $scenario in S2-200) echo 200 ;; S2-20) echo 20 ;; esac)"
      r "p50 latency ms" p50_ms
      r "p99 latency ms" p99_ms "$([ "$scenario" = S2-200 ] && echo '< 5')"
      r "POST p50 ms" call_p50_ms
      r "server CPU s / 1M deliv." server_cpu_s_per_m
      r "lost" lost 0
      r "dup" dup 0
      r "reordered (per publisher)" reordered 0
      ;;
    S3)
      r "RSS KB / connection" rss_per_conn_kb "<= 16"
      r "RSS KB total" rss_kb
      r "connected" connected 10000
      ;;
    S1-mem)
      r "deliveries/s" deliveries_per_s
      r "RSS KB / conn, burst" rss_per_conn_kb
      r "RSS KB / conn, idle" rss_per_conn_idle_kb "back near S3's"
      r "peak RSS KB" rss_peak_kb
      r "lost" lost 0
      ;;
  esac
done
if [ -z "${SKIP_CRITERION:-}" ]; then
  for n in 100 1000 10000; do
    row dispatch "$n subs shared us" "$(criterion_us "shared/$n")" "-" "-" "$([ $n = 100 ] && echo '< 20')"
    row dispatch "$n subs distinct us" "$(criterion_us "distinct/$n")" "-" "-" "$([ $n = 100 ] && echo '< 100')"
  done
fi
