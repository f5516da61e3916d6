#!/usr/bin/env bash
# The store goals of issue 5: three release peers on loopback (N=3,
# durable), then `ringkv bench` from a fourth process:
#   puts at W=2 (--read-ratio 0 --sequential), then gets at R=2 and R=1
# (--read-ratio 1), 64 requests in flight, 100-byte values.
#
# Usage: bench/store.sh [BINARY...]
# With no argument it builds and measures target/release/ringkv. With
# several binaries (an A/B of two builds) it measures them in turns,
# ROUNDS times (default 2), so both see the same machine load. Each line
# also gives the CPU time the three peers spent per operation, which
# another load on the machine disturbs much less than ops/s.
# Environment: PUTS (default 60000), GETS (100000), ROUNDS. MEM_KEYS=N
# instead loads N keys (--sequential) and reports each peer's resident
# memory.
# Stops everything it started, whatever happens (trap).
set -euo pipefail
cd "$(dirname "$0")/.."

PUTS=${PUTS:-60000}
GETS=${GETS:-100000}
ROUNDS=${ROUNDS:-2}
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release -q -p ringkv-node
  bins=("$PWD/target/release/ringkv")
fi

source bench/lib.sh


# run BIN LABEL: one cluster, the three workloads, one line each.
run() {
  local bin=$1 label=$2 dir addrs=() i out key join=()
  dir=$(mktemp -d "$tmp/run.XXXX")
  local mine=()
  for i in 1 2 3; do
    out="$dir/n$i.out"
    RUST_LOG=warn "$bin" node --data "$dir/n$i" --listen 127.0.0.1:0 --name "n$i" "${join[@]}" \
      >"$out" 2>"$dir/n$i.err" &
    pids+=($!)
    mine+=($!)
    wait_until 30 "peer $i" grep -q 'listening on' "$out"
    addrs+=("$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$out" | head -1)")
    key=$(cat "$dir/n1/cluster.key")
    join=(--join "${addrs[0]}" --cluster-key "$key")
  done
  agreed() { "$bin" members --peer "${addrs[0]}" --cluster-key "$key" | grep -c alive | grep -q '^3$'; }
  wait_until 60 "three peers" agreed
  local common=(--peer "${addrs[0]}" --peers "${addrs[1]},${addrs[2]}" --cluster-key "$key"
    --concurrency 64 --value-size 100 --keys "${MEM_KEYS:-$PUTS}")
  # The row of the operation measured (op count ops/s p50 p99 p999) and
  # the total, on one line.
  summary() { grep -E '^ *(put|get) +[1-9]|total .* ops/s' | sed 's/^ *//; s/  */ /g' | paste -sd ';' -; }
  # CPU time of the three peers, in clock ticks: less sensitive than ops/s
  # to whatever else runs on the machine.
  ticks() { local t=0 pid; for pid in "${mine[@]}"; do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done; echo "$t"; }
  # workload NAME OPS BENCH-FLAGS...: one line with ops/s and the peers'
  # CPU microseconds per operation.
  workload() {
    local name=$1 ops=$2 before after line; shift 2
    before=$(ticks)
    line=$("$bin" bench "${common[@]}" --ops "$ops" "$@" 2>/dev/null | summary)
    after=$(ticks)
    echo "$label $name: $line; peers' CPU $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$ops" 'BEGIN { printf "%.0f", t / hz * 1e6 / n }') us/op"
  }
  if [ -n "${MEM_KEYS:-}" ]; then
    # Resident memory with MEM_KEYS keys stored on every replica.
    workload "load of $MEM_KEYS keys" "$MEM_KEYS" --read-ratio 0 --sequential
    sleep 5
    echo "$label resident memory per peer: $(for pid in "${mine[@]}"; do
      awk '/VmRSS/ { printf "%.0f MB ", $2 / 1024 }' "/proc/$pid/status"; done)"
  else
    workload "puts W=2" "$PUTS" --read-ratio 0 --sequential
    workload "gets R=2" "$GETS" --read-ratio 1
    workload "gets R=1" "$GETS" --read-ratio 1 --consistency one
  fi
  for pid in "${mine[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${mine[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}

for round in $(seq 1 "$ROUNDS"); do
  for b in "${bins[@]}"; do
    run "$b" "[round $round] $(basename "$(dirname "$b")")/$(basename "$b")"
  done
done
