#!/usr/bin/env bash
# The Python package's benchmarks in one command:
#   1. resolver overhead: one Python resolver call as the engine sees it,
#      sync and async, without sockets (benches/python/resolver_overhead.py);
#   2. S1 (burst: batches of 100 events per POST), S1-single (the same 10,000
#      events, one per POST, each waiting for its reply: what users do) and
#      S2-200 (the load generator's scenarios, as in run.sh) through each
#      serving mode, fanwire-rust (manager.start: the Rust server in-process),
#      fanwire-fastapi and fanwire-starlette (uvicorn holds the sockets),
#      beside Strawberry on FastAPI/uvicorn, in the same invocation. Every
#      fanwire mode runs an async def pass-through resolver.
#
#   benches/python.sh                 # everything, REPEAT=3 runs each
#   REPEAT=1 MODES="fanwire-rust strawberry" SCENARIOS=S1 benches/python.sh
#   REPEAT=1 MODES="fanwire-rust fanwire-fastapi strawberry" SCENARIOS=S1-single benches/python.sh
#   MAX_BACKLOG=16 MODES=fanwire-rust SCENARIOS=S1-single benches/python.sh   # the fanwire modes' limits.max_backlog
#
# It builds a release wheel into its own venv (FANWIRE_BENCH_VENV, default
# ~/.cache/fanwire/bench-venv) and the release loadgen. Every server binds
# 127.0.0.1 and every run is bounded in time. Raw lines go to $OUT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
REPEAT="${REPEAT:-3}"
SCENARIOS="${SCENARIOS:-S1 S1-single S2-200}"
MODES="${MODES:-fanwire-rust fanwire-fastapi fanwire-starlette strawberry}"
VENV="${FANWIRE_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fanwire/bench-venv}"
OUT="${OUT:-$TARGET/fanwire-bench/python-$(date +%Y%m%d-%H%M%S)}"
SCHEMA="$ROOT/benches/schema.graphql"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
log() { printf '==> %s\n' "$*" >&2; }

log "venv $VENV: release wheel, frameworks, Strawberry"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r benches/python/requirements.txt
rm -rf "$OUT/wheel"
(cd python && "$VENV/bin/maturin" build --release --quiet --out "$OUT/wheel")
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$OUT"/wheel/fanwire-*.whl

log "building the release load generator"
cargo build --release -p fanwire-benches --bin loadgen
LOADGEN="$TARGET/release/loadgen"

log "resolver overhead (no sockets)"
(cd "$OUT" && "$VENV/bin/python" "$ROOT/benches/python/resolver_overhead.py") | tee "$OUT/resolver.txt"

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

scenario_args() {
  case "$1" in
    S1) echo "--connections 100 --events 10000 --mode burst --payload-bytes 200" ;;
    S1-single) echo "--connections 100 --events 10000 --mode single --payload-bytes 200" ;;
    S2 | S2-200) echo "--connections 1000 --events 2000 --mode single --rate 200 --payload-bytes 200" ;;
    *) echo "python.sh: unknown scenario $1" >&2; exit 1 ;;
  esac
}
for scenario in $SCENARIOS; do scenario_args "$scenario" >/dev/null; done

for scenario in $SCENARIOS; do
  for run in $(seq "$REPEAT"); do
    for mode in $MODES; do
      label="$scenario/$mode/$run"
      logfile="$OUT/${scenario}-${mode}-${run}.log"
      log "$label"
      (cd "$OUT" && exec "$VENV/bin/python" "$ROOT/benches/python/bench_server.py" "$mode" --schema "$SCHEMA" \
        ${MAX_BACKLOG:+--max-backlog "$MAX_BACKLOG"}) >"$logfile" 2>&1 &
      SERVER_PID=$!
      url=""
      for _ in $(seq 300); do
        url="$(sed -n 's/.* listening on \(http:\/\/[^ ]*\).*/\1/p' "$logfile" | head -n1 || true)"
        [ -n "$url" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
      done
      if [ -z "$url" ]; then
        echo "python.sh: $mode did not start:" >&2
        cat "$logfile" >&2
        exit 1
      fi
      # shellcheck disable=SC2046 # the scenario's arguments split on purpose
      if ! timeout 900 "$LOADGEN" --url "ws://${url#http://}/graphql" --publish-url "$url/publish" \
        --server-pid "$SERVER_PID" --label "$label" $(scenario_args "$scenario") | tee -a "$RESULTS"; then
        echo "RESULT label=$label failed=1" | tee -a "$RESULTS"
      fi
      stop_server
    done
  done
done

# median SCENARIO MODE KEY over the runs.
median() {
  grep "^RESULT label=$1/$2/" "$RESULTS" |
    tr ' ' '\n' | sed -n "s/^$3=//p" | grep -E '^[0-9.]+$' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "na"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

{
  echo
  echo "medians of $REPEAT run(s); raw lines in $RESULTS"
  printf '%-9s %-18s %13s %9s %9s %9s %9s %6s %4s %10s %11s\n' scenario mode deliveries/s events/s \
    p50_ms p99_ms post_p50 lost dup server_cpu cpu_s_per_M
  for scenario in $SCENARIOS; do
    for mode in $MODES; do
      m() { median "$scenario" "$mode" "$1"; }
      printf '%-9s %-18s %13s %9s %9s %9s %9s %6s %4s %10s %11s\n' "$scenario" "$mode" \
        "$(m deliveries_per_s)" "$(m publish_rate)" "$(m p50_ms)" "$(m p99_ms)" "$(m call_p50_ms)" \
        "$(m lost)" "$(m dup)" "$(m server_cpu_s)" "$(m server_cpu_s_per_m)"
    done
  done
} | tee "$OUT/summary.txt"
