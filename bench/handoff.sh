#!/usr/bin/env bash
# Handoff figures of issue 6, on loopback with release builds:
#   1. stream throughput: one peer holds KEYS x 1 KB; a second joins and
#      pulls all of it (N=3 > 2 peers, so it replicates everything);
#   2. foreground latency during that handoff against idle, same run;
#   3. time to restore three copies after kill -9 in a 5-peer cluster.
# Usage: bench/handoff.sh [stream|restore|all]
#   STREAM_KEYS (default 500000: 500 MB), RESTORE_KEYS (default 1000000:
#   1 GB), RATE (the third peer's --handoff-rate, default 24MB),
#   PROFILE=1 records perf profiles of both sides of the stream, BIN
#   another binary to measure.
# The stream itself runs with --handoff-rate 0 (no cap).
# Stops every process it started; data lives in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
# BIN=path measures another build (an A/B in turns); by default the
# release build of this tree.
bin=${BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -q -p ringkv-node
  bin=$PWD/target/release/ringkv
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

key=""
# start NAME [flags...]: a peer in the background; sets ADDR and PID.
start() {
  local name=$1; shift
  RUST_LOG=warn "$bin" node --data "$work/$name" --listen 127.0.0.1:0 --name "$name" \
    --settle 1s --cleanup-grace 5s "$@" >"$work/$name.log" 2>&1 &
  disown
  PID=$!
  pids+=("$PID")
  for _ in $(seq 100); do
    ADDR=$(sed -n 's/.* listening on \([0-9.:]*\),.*/\1/p' "$work/$name.log" | head -1)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "peer $name did not start" >&2; cat "$work/$name.log" >&2; exit 1; }
  if [ -z "$key" ]; then
    for _ in $(seq 50); do [ -s "$work/$name/cluster.key" ] && break; sleep 0.1; done
    key=$(cat "$work/$name/cluster.key")
  fi
}
field() { # field PEER NAME: a number from `ringkv handoff --json`
  "$bin" handoff --json --peer "$1" --cluster-key "$key" | sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p"
}
ready() { # ready PEER: the peer holds the ring it has
  local j
  j=$("$bin" handoff --json --peer "$1" --cluster-key "$key") || return 1
  local ring readyv
  ring=$(echo "$j" | sed -n 's/.*"ring": *"\([0-9a-f]*\)".*/\1/p')
  readyv=$(echo "$j" | sed -n 's/.*"ready": *"\([0-9a-f]*\)".*/\1/p')
  [ -n "$ring" ] && [ "$ring" = "$readyv" ]
}
now() { date +%s.%N; }
load() { # load KEYS PEERS...
  local n=$1 first=$2; shift 2
  local rest
  rest=$(IFS=,; echo "$*")
  "$bin" bench --quiet --peer "$first" ${rest:+--peers "$rest"} --cluster-key "$key" \
    --ops "$n" --keys "$n" --sequential --read-ratio 0 --value-size 1000 --concurrency 64
}
p99() { # the get and put p99 lines of a bench report
  grep -E '^(put|get) ' | awk '{ print "  " $1 ": " $3 " ops/s, p50 " $4 " " $5 ", p99 " $6 " " $7 }'
}

if [ "$what" = stream ] || [ "$what" = all ]; then
  n=${STREAM_KEYS:-500000}
  rate=${RATE:-24MB}
  echo "== stream: one peer with $n x 1 KB; a second joins and pulls it all"
  start s1; s1=$ADDR; s1pid=$PID
  t=$(now); load "$n" "$s1" >/dev/null; echo "loaded in $(echo "$(now) - $t" | bc) s"
  start s2 --join "$s1" --cluster-key "$key" --handoff-rate 0; s2=$ADDR; s2pid=$PID
  t0=$(now)
  if [ "${PROFILE:-0}" = 1 ]; then
    perf record -F 499 -g -p "$s2pid" -o "$work/recv.data" -- sleep 5 >/dev/null 2>&1 &
    perf1=$!
    perf record -F 499 -g -p "$s1pid" -o "$work/send.data" -- sleep 5 >/dev/null 2>&1 &
    perf2=$!
  fi
  c1=$(ps -o cputimes= -p "$s1pid"); c2=$(ps -o cputimes= -p "$s2pid")
  until ready "$s2"; do sleep 0.1; done
  t1=$(now)
  bytes=$(field "$s2" bytes_moved); keys=$(field "$s2" keys_moved)
  secs=$(echo "$t1 - $t0 - 1" | bc)
  echo "pulled $keys keys, $bytes bytes in $secs s (after the 1 s settle): $(echo "scale=1; $bytes / 1048576 / $secs" | bc) MiB/s"
  echo "cpu seconds during the transfer: sender $(( $(ps -o cputimes= -p "$s1pid") - c1 )), receiver $(( $(ps -o cputimes= -p "$s2pid") - c2 ))"
  if [ "${PROFILE:-0}" = 1 ]; then
    wait "$perf1" "$perf2" || true
    for side in send recv; do
      echo "-- perf, $side side (self time, top symbols)"
      { perf report -i "$work/$side.data" --no-children --sort dso,symbol --stdio 2>/dev/null || true; } \
        | grep -E '^ +[0-9]' | cut -c1-110 | head -20 || true
    done
  fi
  echo "== foreground latency: idle, then while a third peer pulls everything (handoff rate: $rate/s)"
  fg() {
    "$bin" bench --quiet --peer "$s1" --peers "$s2" --cluster-key "$key" --duration 10s --keys "$n" \
      --read-ratio 0.5 --value-size 1000 --concurrency 16 | p99
  }
  echo "idle:"; fg
  start s3 --join "$s1" --cluster-key "$key" --handoff-rate "$rate"; s3=$ADDR
  sleep 1
  echo "during the handoff:"; fg
  if ready "$s3"; then echo "(the handoff finished within the 10 s)"; else echo "(the handoff was still running at the end)"; fi
  for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  pids=(); key=""
fi

if [ "$what" = restore ] || [ "$what" = all ]; then
  n=${RESTORE_KEYS:-1000000}
  echo "== restore: 5 peers, $n x 1 KB, kill -9 of one (dead grace 5 s)"
  start r1 --dead-grace 5s; r1=$ADDR
  addrs=("$r1")
  for i in 2 3 4 5; do start "r$i" --join "$r1" --cluster-key "$key" --dead-grace 5s; addrs+=("$ADDR"); done
  victim=$PID; vname=r5
  sleep 3
  t=$(now); load "$n" "${addrs[@]:0:4}" | grep -E '^(put|total)'; echo "loaded in $(echo "$(now) - $t" | bc) s"
  for a in "${addrs[@]}"; do until ready "$a"; do sleep 0.2; done; done
  ringdigest() { "$bin" handoff --json --peer "$1" --cluster-key "$key" | sed -n 's/.*"ring": *"\([0-9a-f]*\)".*/\1/p'; }
  before=$(ringdigest "$r1")
  moved0=0
  for a in "${addrs[@]:0:4}"; do moved0=$((moved0 + $(field "$a" bytes_moved) )); done
  kill -9 "$victim"
  t0=$(now)
  # Restored when the four survivors hold a ring without the victim.
  for a in "${addrs[@]:0:4}"; do
    until [ "$(ringdigest "$a")" != "$before" ] && ready "$a" && [ "$(field "$a" pending_ranges)" = 0 ]; do sleep 0.2; done
  done
  t1=$(now)
  moved=$(( -moved0 ))
  for a in "${addrs[@]:0:4}"; do moved=$((moved + $(field "$a" bytes_moved) )); done
  echo "three copies again $(echo "$t1 - $t0" | bc) s after the kill (5 s dead grace + 1 s settle included); $moved bytes streamed"
fi
