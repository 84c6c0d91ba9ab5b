#!/usr/bin/env bash
# Fanwire's benchmarks in one command: builds the release binaries, installs
# the Node baseline, runs scenarios S1, S1d, S2 and S3 against fanwire and
# the baseline (a fresh server process per run), then the criterion dispatch
# bench, and prints a summary table with fanwire / baseline ratios.
#
#   benches/run.sh                  # everything, each scenario REPEAT times
#   REPEAT=1 benches/run.sh         # quicker, one run per scenario
#   SCENARIOS="S1 S3" benches/run.sh
#   SKIP_CRITERION=1 benches/run.sh
#   FANWIRE_BIN=/path/to/other/fanwire SERVERS=fanwire benches/run.sh   # another build alone
#
# Raw result lines, server logs and configs go to $OUT (printed at the end).
# Every load generator run only talks to 127.0.0.1 and is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
REPEAT="${REPEAT:-3}"
SCENARIOS="${SCENARIOS:-S1 S1d S2 S3}"
SERVERS="${SERVERS:-fanwire baseline}"
OUT="${OUT:-$TARGET/fanwire-bench/$(date +%Y%m%d-%H%M%S)}"
SCHEMA="$ROOT/benches/schema.graphql"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"

log() { printf '==> %s\n' "$*" >&2; }

log "building release binaries (target dir: $TARGET)"
cargo build --release -p fanwire-server --bin fanwire -p fanwire-benches --bin loadgen
if [ -z "${SKIP_CRITERION:-}" ]; then
  cargo bench -p fanwire-benches --bench dispatch --no-run
fi
FANWIRE="${FANWIRE_BIN:-$TARGET/release/fanwire}"
LOADGEN="$TARGET/release/loadgen"

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

# start_server KIND LOGFILE: starts fanwire or the baseline on a free port.
start_server() {
  local kind="$1" logfile="$2"
  # Created here: the background child opens it only when it gets to run.
  : >"$logfile"
  case "$kind" in
    fanwire) "$FANWIRE" serve --schema "$SCHEMA" --listen 127.0.0.1:0 --config "$CONFIG" >"$logfile" 2>&1 & ;;
    baseline) node benches/baseline/server.mjs serve --schema "$SCHEMA" --listen 127.0.0.1:0 --config "$CONFIG" >"$logfile" 2>&1 & ;;
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

scenario_args() {
  case "$1" in
    S1) echo "--connections 100 --events 10000 --rate 0 --payload-bytes 200" ;;
    S1d) echo "--connections 100 --events 10000 --rate 0 --payload-bytes 200 --distinct 100" ;;
    S2) echo "--connections 1000 --events 2000 --rate 200 --payload-bytes 200" ;;
    S3) echo "--connections 10000 --idle" ;;
    *) echo "run.sh: unknown scenario $1" >&2; exit 1 ;;
  esac
}

for scenario in $SCENARIOS; do
  for run in $(seq "$REPEAT"); do
    for kind in $SERVERS; do
      label="$scenario/$kind/$run"
      log "$label"
      start_server "$kind" "$OUT/${scenario}-${kind}-${run}.log"
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

row() { # scenario metric fanwire baseline target
  awk -v s="$1" -v m="$2" -v f="$3" -v b="$4" -v t="$5" 'BEGIN {
    r = (f ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) ? sprintf("%.3g", f / b) : "-"
    printf "%-9s %-22s %14s %14s %9s   %s\n", s, m, f, b, r, t
  }'
}

echo
echo "Fanwire benchmarks: medians of $REPEAT run(s); ratio = fanwire / baseline. Raw results: $RESULTS"
printf '%-9s %-22s %14s %14s %9s   %s\n' scenario metric fanwire baseline ratio target
for scenario in $SCENARIOS; do
  m() { median "$scenario" "$1" "$2"; }
  case "$scenario" in
    S1 | S1d)
      row "$scenario" "deliveries/s" "$(m fanwire deliveries_per_s)" "$(m baseline deliveries_per_s)" \
        "$([ "$scenario" = S1 ] && echo '>= 1,000,000' || echo '(100 distinct groups)')"
      row "$scenario" "lost" "$(m fanwire lost)" "$(m baseline lost)" "0"
      row "$scenario" "p50 latency ms" "$(m fanwire p50_ms)" "$(m baseline p50_ms)" ""
      row "$scenario" "p99 latency ms" "$(m fanwire p99_ms)" "$(m baseline p99_ms)" ""
      row "$scenario" "server CPU s" "$(m fanwire server_cpu_s)" "$(m baseline server_cpu_s)" ""
      ;;
    S2)
      row S2 "events/s achieved" "$(m fanwire publish_rate)" "$(m baseline publish_rate)" "200"
      row S2 "p50 latency ms" "$(m fanwire p50_ms)" "$(m baseline p50_ms)" ""
      row S2 "p99 latency ms" "$(m fanwire p99_ms)" "$(m baseline p99_ms)" "< 5"
      row S2 "max latency ms" "$(m fanwire max_ms)" "$(m baseline max_ms)" ""
      row S2 "lost" "$(m fanwire lost)" "$(m baseline lost)" "0"
      row S2 "server CPU s" "$(m fanwire server_cpu_s)" "$(m baseline server_cpu_s)" ""
      ;;
    S3)
      row S3 "RSS KB / connection" "$(m fanwire rss_per_conn_kb)" "$(m baseline rss_per_conn_kb)" "<= 16"
      row S3 "RSS KB total" "$(m fanwire rss_kb)" "$(m baseline rss_kb)" ""
      row S3 "connected" "$(m fanwire connected)" "$(m baseline connected)" "10000"
      ;;
  esac
done
if [ -z "${SKIP_CRITERION:-}" ]; then
  for n in 100 1000 10000; do
    row dispatch "$n subs shared us" "$(criterion_us "shared/$n")" "-" "$([ $n = 100 ] && echo '< 20')"
    row dispatch "$n subs distinct us" "$(criterion_us "distinct/$n")" "-" "$([ $n = 100 ] && echo '< 100')"
  done
fi
