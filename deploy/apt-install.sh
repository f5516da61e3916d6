#!/usr/bin/env bash
# Installs Debian packages with apt-get, quietly; on failure prints apt's
# output and why the packages were wanted, and exits 1. Shared by .ci/run,
# deploy/validate.sh and deploy/image-test.sh.
#
#   deploy/apt-install.sh "the RESP tests need redis-cli" redis-tools
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 WHY PACKAGE..." >&2
  exit 2
fi
why=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "cannot install $* with apt-get: $why" >&2
  exit 1
fi
