#!/usr/bin/env bash
# A rolling upgrade between two real builds: builds the ringkv of git
# revision OLD_REV (the release being upgraded from), starts four peers
# on it under checked load, and moves them one by one to the build of
# the working tree (testbed/scenarios/upgrade-builds.toml). Fails on any
# lost write, stale read or failed convergence.
#
#   testbed/upgrade-check.sh OLD_REV [--release]
#
# The old build goes to a temporary worktree with its own target dir
# (a full build: minutes). docs/upgrades.md.
set -euo pipefail

old=${1:?usage: testbed/upgrade-check.sh OLD_REV [--release]}
profile=debug
flags=()
if [[ ${2:-} == --release ]]; then
    profile=release
    flags=(--release)
fi
root=$(git rev-parse --show-toplevel)
cd "$root"
rev=$(git rev-parse --verify "$old^{commit}")
work=$(mktemp -d)
cleanup() {
    git worktree remove --force "$work/old" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

git worktree add --detach -q "$work/old" "$rev"
echo "building the old build ($rev)"
(cd "$work/old" && cargo build -q "${flags[@]}" -p ringkv-node --bin ringkv)
echo "building this build ($(git rev-parse --short HEAD), working tree)"
cargo build -q "${flags[@]}" -p ringkv-node --bin ringkv
"target/$profile/ringkv" testbed scenario testbed/scenarios/upgrade-builds.toml \
    --peer-bin "$work/old/target/$profile/ringkv"
