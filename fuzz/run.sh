#!/usr/bin/env bash
# Fuzzes every network decoder with cargo-fuzz (libFuzzer, nightly) for
# SECS seconds each (default 600), one after the other, and prints one
# line per target: runs, seconds, new crashes. Any single allocation
# over MALLOC_MB (default 16) counts as a crash: no decoder may allocate
# more than its input's claim cap (docs/security.md, "Fuzzing").
# Usage: fuzz/run.sh [TARGET...]   (default: every target)
# Needs: rustup's nightly toolchain and `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-600}
MALLOC_MB=${MALLOC_MB:-16}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O >/dev/null
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "logs"
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" \
    -malloc_limit_mb="$MALLOC_MB" -rss_limit_mb=1024 -print_final_stats=1 \
    >"logs/$t.log" 2>&1; then
    result=ok
  else
    result="FAILED (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  echo "$t: $runs runs in ${SECS}s: $result"
done
exit $status
