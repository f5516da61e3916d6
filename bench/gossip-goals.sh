#!/usr/bin/env bash
# Measures the membership goals of issue 3 with the simulator, for ringkv's
# defaults and a memberlist-like profile side by side. Simulated time only;
# the machine's load does not change the figures (wall time goes to stderr).
# Usage: bench/gossip-goals.sh [path/to/ringkv]   (about 15 minutes)
set -euo pipefail
bin=${1:-target/release/ringkv}
if [ ! -x "$bin" ]; then
  cargo build --release -p ringkv-node
  bin=target/release/ringkv
fi
sim() { "$bin" testbed simulate "$@"; }

for profile in ringkv memberlist; do
  echo "=== profile: $profile"
  echo "--- 1000 peers, one killed, 20 seeds"
  sim --profile "$profile" --nodes 1000 --duration 40 --kill 1@10s --runs 20
  echo "--- 1000 peers, one join and one leave, 20 seeds"
  sim --profile "$profile" --nodes 1000 --duration 30 --join 1@10s --leave 1@20s --runs 20
  echo "--- 1000 peers, 10% loss, 10 minutes, nobody killed"
  sim --profile "$profile" --nodes 1000 --duration 600 --loss 0.1
  echo "--- 1000 peers, steady state, 10 minutes"
  sim --profile "$profile" --nodes 1000 --duration 600
done
