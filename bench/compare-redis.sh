#!/usr/bin/env bash
# ringkv against Redis Cluster with the same tool, on the same machine, in
# the same run: a 3-peer ringkv cluster (release build, every peer serving
# RESP) and a 3-master Redis Cluster (no replicas, appendonly yes,
# appendfsync everysec), both on loopback, each loaded with
#   redis-benchmark -t set,get -n N -c 50 -d 100 -r KEYSPACE -P 1|16
# Redis through `redis-benchmark --cluster`; ringkv spread over its three
# peers (one redis-benchmark per peer at once, clients and requests split
# three ways, rates summed). Then the ringkv GETs again at R=1 (peers
# restarted with --resp-consistency one). Prints one table.
#
# Environment: N (requests per test, default 200000), CLIENTS (50),
# SIZE (100), KEYSPACE (100000; 0 = redis-benchmark's single key).
# Stops everything it started, whatever happens (trap).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-200000}
CLIENTS=${CLIENTS:-50}
SIZE=${SIZE:-100}
KEYSPACE=${KEYSPACE:-100000}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need redis-server || ! need redis-cli || ! need redis-benchmark; then
  echo "installing redis-server and redis-tools" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools; } >/dev/null ||
    { echo "cannot install redis-server/redis-tools with apt-get" >&2; exit 1; }
fi

cargo build --release -q -p ringkv-node
BIN=$PWD/target/release/ringkv

source bench/lib.sh

# A port free on loopback, with its cluster-bus twin (+10000) free too.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
       ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then
      echo "$p"; return
    fi
  done
  echo "no free port found" >&2; exit 1
}


# ---- Redis Cluster: three masters, no replicas.
redis_ports=()
for i in 1 2 3; do
  port=$(free_port)
  mkdir -p "$tmp/redis$i"
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --dir "$tmp/redis$i" \
    --cluster-enabled yes --cluster-config-file nodes.conf --appendonly yes \
    --appendfsync everysec --save "" --daemonize no --logfile "$tmp/redis$i/log" &
  pids+=($!)
  redis_ports+=("$port")
done
for port in "${redis_ports[@]}"; do
  wait_until 30 "redis-server on $port" redis-cli -p "$port" ping
done
redis-cli --cluster create "${redis_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$tmp/cluster-create.log"
cluster_ok() {
  for port in "${redis_ports[@]}"; do
    redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' || return 1
  done
}
wait_until 60 "the Redis Cluster to be ok" cluster_ok

# ---- ringkv: three peers, RESP on each.
# Fixed QUIC ports, so that peers restarted on the same data dirs find
# each other again.
resp_ports=()
listen_ports=("$(free_port)" "$(free_port)" "$(free_port)")
start_peers() {
  local consistency=$1 i out join=()
  resp_ports=()
  for i in 1 2 3; do
    out="$tmp/ringkv$i.out"
    : >"$out"
    RUST_LOG=warn "$BIN" node --data "$tmp/ringkv$i" --listen "127.0.0.1:${listen_ports[$((i - 1))]}" \
      --name "n$i" "${join[@]}" --resp 127.0.0.1:0 --resp-consistency "$consistency" \
      >"$out" 2>>"$tmp/ringkv$i.err" &
    pids+=($!)
    ringkv_pids[$i]=$!
    wait_until 30 "ringkv peer $i" grep -q 'RESP (Redis protocol) on' "$out"
    resp_ports+=("$(sed -n 's/.*RESP (Redis protocol) on 127.0.0.1:\([0-9]*\).*/\1/p' "$out")")
    join=(--join "127.0.0.1:${listen_ports[0]}" --cluster-key "$(cat "$tmp/ringkv1/cluster.key")")
  done
  ringkv_ok() {
    for port in "${resp_ports[@]}"; do
      redis-cli -p "$port" info cluster | grep -q 'ringkv_live_members:3' || return 1
    done
  }
  wait_until 60 "the ringkv peers to agree" ringkv_ok
}
stop_peers() {
  for i in 1 2 3; do kill "${ringkv_pids[$i]}" 2>/dev/null || true; done
  for i in 1 2 3; do wait "${ringkv_pids[$i]}" 2>/dev/null || true; done
}
declare -a ringkv_pids

keys_args=()
if [ "$KEYSPACE" != 0 ]; then keys_args=(-r "$KEYSPACE"); fi

# bench_redis TEST PIPELINE -> "rps p50 p99"
bench_redis() {
  redis-benchmark --cluster -h 127.0.0.1 -p "${redis_ports[0]}" -t "$1" -n "$N" -c "$CLIENTS" \
    -d "$SIZE" "${keys_args[@]}" -P "$2" --csv 2>/dev/null |
    awk -F, -v t="${1^^}" '{ gsub(/"/, "") } $1 == t { print $2, $5, $7 }'
}

# bench_ringkv TEST PIPELINE -> "rps p50 p99": one redis-benchmark per
# peer at once; rates summed, the median p50 and the worst p99.
bench_ringkv() {
  local i c n files=() running=()
  for i in 0 1 2; do
    c=$(((CLIENTS + 2 - i) / 3)); n=$(((N + 2 - i) / 3))
    redis-benchmark -h 127.0.0.1 -p "${resp_ports[$i]}" -t "$1" -n "$n" -c "$c" \
      -d "$SIZE" "${keys_args[@]}" -P "$2" --csv >"$tmp/rk-$1-$2-$i.csv" 2>/dev/null &
    running+=($!)
    files+=("$tmp/rk-$1-$2-$i.csv")
  done
  wait "${running[@]}"
  cat "${files[@]}" | awk -F, -v t="${1^^}" '{ gsub(/"/, "") } $1 == t { print $2, $5, $7 }' |
    sort -k2 -n | awk '{ rps += $1; p50[NR] = $2; if ($3 > p99) p99 = $3 } END { printf "%.0f %s %s\n", rps, p50[2], p99 }'
}

start_peers quorum
declare -A result
for pipeline in 1 16; do
  for test in set get; do
    result[redis-$test-$pipeline]=$(bench_redis "$test" "$pipeline")
    result[ringkv-$test-$pipeline]=$(bench_ringkv "$test" "$pipeline")
  done
done
stop_peers
start_peers one
for pipeline in 1 16; do
  result[ringkv1-get-$pipeline]=$(bench_ringkv get "$pipeline")
done

echo
echo "redis-benchmark -t set,get -n $N -c $CLIENTS -d $SIZE ${keys_args[*]}; $(nproc) cores shared by servers and load generators"
printf '| %-22s | %2s | %12s | %8s | %8s | %12s | %8s | %8s | %13s |\n' \
  test P "Redis ops/s" "p50 ms" "p99 ms" "ringkv ops/s" "p50 ms" "p99 ms" "ringkv/Redis"
printf '| %-22s | %2s | %12s | %8s | %8s | %12s | %8s | %8s | %13s |\n' \
  --- --: ---: ---: ---: ---: ---: ---: ---:
row() {
  local label=$1 pipeline=$2 ours=$3 theirs=$4
  read -r r_rps r_p50 r_p99 <<<"$theirs"
  read -r k_rps k_p50 k_p99 <<<"$ours"
  printf '| %-22s | %2s | %12.0f | %8s | %8s | %12.0f | %8s | %8s | %12.2fx |\n' \
    "$label" "$pipeline" "$r_rps" "$r_p50" "$r_p99" "$k_rps" "$k_p50" "$k_p99" \
    "$(awk -v a="$k_rps" -v b="$r_rps" 'BEGIN { print (b > 0 ? a / b : 0) }')"
}
for pipeline in 1 16; do
  row "SET (W=2, fsync)" "$pipeline" "${result[ringkv-set-$pipeline]}" "${result[redis-set-$pipeline]}"
  row "GET (R=2)" "$pipeline" "${result[ringkv-get-$pipeline]}" "${result[redis-get-$pipeline]}"
  row "GET (R=1)" "$pipeline" "${result[ringkv1-get-$pipeline]}" "${result[redis-get-$pipeline]}"
done
