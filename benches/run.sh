#!/usr/bin/env bash
# Fanwire's benchmarks in one command: builds the release binaries, installs
# the Node baseline, runs every scenario (S1, S1d, S1-single, S1-post,
# S1-conc, S2-200, S2-20, S3, S1-mem, S1-single-mem; S4 on request; see
# benches/README.md)
# against fanwire, the Node baseline and `floor` (a stand-in server that
# only writes the frames: the lower bound), a fresh server process per run,
# then the criterion dispatch bench, and prints medians with fanwire /
# baseline and fanwire / floor ratios.
#
#   benches/run.sh                  # everything, each scenario REPEAT times
#   REPEAT=1 benches/run.sh         # quicker, one run per scenario
#   SCENARIOS="S1 S3" benches/run.sh
#   SERVERS="fanwire floor" SCENARIOS="S2-200 S2-20" benches/run.sh
#   SKIP_CRITERION=1 benches/run.sh
#   FANWIRE_BIN=/path/to/other/fanwire SERVERS=fanwire benches/run.sh   # another build alone
#   FLOOR_WRITES=direct benches/run.sh  # floor's writes in every scenario (default: per scenario, see floor_writes)
#   MEM_IDLE_S=10 SCENARIOS=S1-mem benches/run.sh   # S1-mem's idle wait (default 5 s)
#   MEM_CONNS=1000 SCENARIOS="S1-mem S1-single-mem" benches/run.sh  # their subscribers (default 100)
#   MEM_WARMUP=0 SCENARIOS=S1-mem benches/run.sh    # measure from a server no client has touched yet
#   FLOOR_ANSWER=after-writes benches/run.sh        # when floor answers a publish (default: per scenario, see floor_answer)
#   SCENARIOS=S4 SERVERS=fanwire benches/run.sh     # 100,000 connections (S4_CONNS, S4_SOURCES)
#   MAX_BACKLOG=256 SERVERS=fanwire SCENARIOS=S1-single benches/run.sh   # fanwire's limits.max_backlog (default: the engine's)
#
# Raw result lines, server logs and configs go to $OUT (printed at the end).
# Every load generator run only talks to 127.0.0.1 and is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
REPEAT="${REPEAT:-3}"
SCENARIOS="${SCENARIOS:-S1 S1d S1-single S1-post S1-conc S2-200 S2-20 S3 S1-mem S1-single-mem}"
SERVERS="${SERVERS:-fanwire baseline floor}"
FLOOR_WRITES="${FLOOR_WRITES:-}"
FLOOR_ANSWER="${FLOOR_ANSWER:-}"
MEM_IDLE_S="${MEM_IDLE_S:-5}"
MEM_CONNS="${MEM_CONNS:-100}"
MEM_WARMUP="${MEM_WARMUP:-1}"
S4_CONNS="${S4_CONNS:-100000}"
S4_SOURCES="${S4_SOURCES:-16}"
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

# S3 holds 10,000 sockets in the load generator and as many in the server;
# S4 S4_CONNS in the server (the load generators split them, see run_s4).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt 1048576 ]; then ulimit -n 1048576; fi
if [ "$(ulimit -n)" -lt 10500 ]; then
  echo "run.sh: S3 needs 'ulimit -n' >= 10500 (have $(ulimit -n))" >&2
  exit 1
fi
if [[ " $SCENARIOS " == *" S4 "* ]] && [ "$(ulimit -n)" -lt $((S4_CONNS + 64)) ]; then
  log "S4: a process may hold $(ulimit -n) descriptors here (the hard limit; raising it needs" \
    "CAP_SYS_RESOURCE), so the server cannot hold $S4_CONNS connections; S4 runs anyway and shows where it stops"
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
if [[ -n "${MAX_BACKLOG:-}" ]]; then
  echo "max_backlog = $MAX_BACKLOG" >>"$CONFIG"
fi

# S4's: S4_CONNS sockets admitted in one go (the per-address share is off:
# the clients come from S4_SOURCES addresses of one host), and an idle
# keep-alive connection kept while they connect, so the publishers' own
# connections, opened first, survive even if the server runs out of
# descriptors meanwhile.
CONFIG_S4="$OUT/fanwire-s4.toml"
cat >"$CONFIG_S4" <<EOF
[server]
header_read_timeout_ms = 900000
connection_share_per_address = 1.0

[limits]
queue_depth = 16384
max_connections = $((S4_CONNS + 1000))
connections_per_second = 100000.0
connection_burst = $((S4_CONNS + 1000)).0
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

# floor_answer SCENARIO: when floor answers a publish. At once (a fan-out
# task writes behind the answer, as fanwire does) where one publish at a
# time would otherwise wait for every socket's write (S1-single, S1-conc);
# after the writes elsewhere, as measured before. FLOOR_ANSWER overrides it.
floor_answer() {
  if [ -n "$FLOOR_ANSWER" ]; then echo "$FLOOR_ANSWER"; return; fi
  case "$1" in
    S1-single | S1-conc | S1-post) echo at-once ;;
    *) echo after-writes ;;
  esac
}

# start_server KIND LOGFILE SCENARIO: starts fanwire, the baseline or floor on a free port.
start_server() {
  local kind="$1" logfile="$2" scenario="$3" config="$CONFIG"
  [ "$scenario" = S4 ] && config="$CONFIG_S4"
  # Created here: the background child opens it only when it gets to run.
  : >"$logfile"
  case "$kind" in
    fanwire) "$FANWIRE" serve --schema "$SCHEMA" --listen 127.0.0.1:0 --config "$config" >"$logfile" 2>&1 & ;;
    baseline) node benches/baseline/server.mjs serve --schema "$SCHEMA" --listen 127.0.0.1:0 --config "$config" >"$logfile" 2>&1 & ;;
    floor) "$FLOOR" --listen 127.0.0.1:0 --writes "$(floor_writes "$scenario")" \
      --answer "$(floor_answer "$scenario")" >"$logfile" 2>&1 & ;;
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
    S1-post) echo "--connections 0 --events 10000 --payload-bytes 200 --mode single" ;;
    S1-conc) echo "$s1 --mode concurrent --publishers 8" ;;
    S2-200) echo "--connections 1000 --events 2000 --mode single --rate 200 --payload-bytes 200" ;;
    S2-20) echo "--connections 1000 --events 400 --mode single --rate 20 --payload-bytes 200" ;;
    S3) echo "--connections 10000 --idle" ;;
    S1-mem) echo "--connections $MEM_CONNS --events 10000 --payload-bytes 200 --mode burst --idle-after $MEM_IDLE_S" ;;
    S1-single-mem) echo "--connections $MEM_CONNS --events 10000 --payload-bytes 200 --mode single --idle-after $MEM_IDLE_S" ;;
    S4) echo "--events 1 --mode single --payload-bytes 200 --source-addrs $S4_SOURCES --max-failures 128 --live-timeout 300 --drain-timeout 30" ;;
    *) echo "run.sh: unknown scenario $1" >&2; exit 1 ;;
  esac
}
for scenario in $SCENARIOS; do scenario_args "$scenario" >/dev/null; done

vmrss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
# The kernel's slab memory in KiB (socket structures live there), machine-wide.
slab_kb() { sed -n 's/^Slab:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/meminfo; }

# run_s4 KIND RUN: S4_CONNS clients subscribe and stay connected, then one
# event goes to all of them. A process may hold only `ulimit -n` sockets,
# so the clients are split over as many load generators as that needs,
# each spreading its clients over S4_SOURCES source addresses (ephemeral
# ports run out at ~28,000 per address). They connect one after the other,
# each once the one before has all its clients live; the first whose
# clients do not all connect is the server's limit, and none starts after
# it. Then the server's memory is read, and only then does the first load
# generator publish the event (the others only receive it). The time to
# reach all is the largest publish-to-receive latency of any client.
run_s4() {
  local kind="$1" run="$2" label="S4/$1/$2" dir="$OUT/S4-$1-$2"
  mkdir -p "$dir"
  start_server "$kind" "$OUT/S4-${kind}-${run}.log" S4
  local hostport="${SERVER_URL#http://}" rss_base slab_base
  rss_base="$(vmrss "$SERVER_PID")"
  slab_base="$(slab_kb)"
  local budget=$(($(ulimit -n) - 64))
  local shards=$(((S4_CONNS + budget - 1) / budget)) left="$S4_CONNS" started=0 k count
  local pids=()
  for ((k = 0; k < shards; k++)); do
    count=$((left / (shards - k)))
    left=$((left - count))
    local only=()
    [ "$k" -gt 0 ] && only=(--receive-only)
    # shellcheck disable=SC2046 # the scenario's arguments split on purpose
    timeout 1800 "$LOADGEN" --url "ws://$hostport/graphql" --publish-url "$SERVER_URL/publish" \
      --server-pid "$SERVER_PID" --label "$label/$k" --connections "$count" $(scenario_args S4) \
      --ready-file "$dir/ready-$k" --go-file "$dir/go" "${only[@]}" >"$dir/loadgen-$k.txt" 2>&1 &
    pids+=("$!")
    started=$((started + count))
    while [ ! -f "$dir/ready-$k" ] && kill -0 "${pids[$k]}" 2>/dev/null; do sleep 0.2; done
    if ! grep -qs ' failed=0 skipped=0' "$dir/ready-$k"; then
      log "$label: load generator $k could not connect all its clients ($(cat "$dir/ready-$k" 2>/dev/null ||
        echo "it exited: $(tail -n 1 "$dir/loadgen-$k.txt")")); no more start"
      break
    fi
  done
  local rss fds health slab
  rss="$(vmrss "$SERVER_PID")"
  slab="$(slab_kb)"
  fds="$(find "/proc/$SERVER_PID/fd" -mindepth 1 | wc -l)"
  health="$(curl -s -m 5 "$SERVER_URL/healthz" | tr -d ' \n' || true)"
  touch "$dir/go"
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  cat "$dir"/loadgen-*.txt >>"$OUT/S4-loadgen.txt"
  grep -h '^RESULT' "$dir"/loadgen-*.txt | tr ' ' '\n' | awk -F= -v label="$label" -v conns="$S4_CONNS" \
    -v started="$started" -v shards="${#pids[@]}" -v rss="$rss" -v base="$rss_base" -v slab="$((slab - slab_base))" \
    -v fds="$fds" -v limit="$(ulimit -n)" -v health="${health:-na}" '
    $1 ~ /^(connected|failed|skipped|live|deliveries|expected|lost|dup|closed)$/ { sum[$1] += $2 }
    $1 ~ /^(max_ms|p99_ms)$/ && $2 + 0 > max[$1] { max[$1] = $2 + 0 }
    END {
      per = sum["connected"] > 0 ? sprintf("%.2f", (rss - base) / sum["connected"]) : "na"
      printf "RESULT label=%s mode=s4 conns=%d loadgens=%d not_started=%d connected=%d failed=%d skipped=%d live=%d", label, conns, shards, conns - started, sum["connected"], sum["failed"], sum["skipped"], sum["live"]
      printf " deliveries=%d expected=%d lost=%d dup=%d closed=%d reach_all_ms=%.3f p99_ms=%.3f", sum["deliveries"], sum["expected"], sum["lost"], sum["dup"], sum["closed"], max["max_ms"], max["p99_ms"]
      printf " rss_base_kb=%d rss_kb=%d rss_per_conn_kb=%s kernel_slab_kb=%d server_fds=%d fd_limit=%d healthz=%s\n", base, rss, per, slab, fds, limit, health
    }' | tee -a "$RESULTS"
  stop_server
}

for scenario in $SCENARIOS; do
  for run in $(seq "$REPEAT"); do
    for kind in $SERVERS; do
      label="$scenario/$kind/$run"
      log "$label"
      if [ "$scenario" = S4 ]; then
        run_s4 "$kind" "$run"
        continue
      fi
      start_server "$kind" "$OUT/${scenario}-${kind}-${run}.log" "$scenario"
      hostport="${SERVER_URL#http://}"
      if [ "$MEM_WARMUP" = 1 ] && [[ "$scenario" == S1-mem || "$scenario" == S1-single-mem ]]; then
        # The process's first clients touch memory it keeps whatever comes
        # next (each worker thread's malloc arena, stack depth, code): ~1 MB
        # here, 10 KB per connection of 100. A round of MEM_CONNS clients
        # and 10 events first, so the per-connection figures measure
        # connections and the burst, not the process warming up.
        timeout 300 "$LOADGEN" --url "ws://$hostport/graphql" --publish-url "$SERVER_URL/publish" \
          --label "$label/warm-up" --connections "$MEM_CONNS" --events 10 --mode single --payload-bytes 200 \
          >>"$OUT/${scenario}-${kind}-${run}.log" 2>&1 || true
        sleep 2
      fi
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
      [ "$scenario" = S1-single ] && target=">= 1,000,000"
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
    S1-post)
      r "events/s achieved" publish_rate
      r "POST p50 ms" call_p50_ms
      r "POST p99 ms" call_p99_ms
      r "server CPU s" server_cpu_s
      ;;
    S4)
      r "connected" connected "$S4_CONNS"
      r "live" live "$S4_CONNS"
      r "RSS KB total" rss_kb
      r "RSS KB / connection" rss_per_conn_kb
      r "kernel slab KB (both ends)" kernel_slab_kb
      r "time to reach all ms" reach_all_ms
      r "lost" lost 0
      r "dup" dup 0
      ;;
    S3)
      r "RSS KB / connection" rss_per_conn_kb "<= 16"
      r "RSS KB total" rss_kb
      r "connected" connected 10000
      ;;
    S1-mem | S1-single-mem)
      r "deliveries/s" deliveries_per_s
      r "RSS KB / conn, before" rss_per_conn_live_kb
      r "RSS KB / conn, burst" rss_per_conn_kb
      r "RSS KB / conn, idle" rss_per_conn_idle_kb "<= 2x S3's"
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
