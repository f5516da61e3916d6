#!/usr/bin/env bash
# Builds the Dockerfile and runs a three-peer cluster from the image, as an
# operator would, then checks what docs/deploy.md promises of it:
#
#   - the image runs as user 10001, keeps its data on the /data volume and
#     carries a HEALTHCHECK that turns healthy once the peer has joined;
#   - peers find their seed by host name, and a key written through one
#     peer is read through another;
#   - it runs on a read-only root file system with every capability
#     dropped (as deploy/kubernetes/statefulset.yaml runs it);
#   - a restarted container keeps its identity and its data;
#   - `stop` (SIGTERM) makes the peer leave gracefully and exit 0.
#
# Usage: deploy/image-test.sh [--engine docker|podman] [--local-bases] [--keep]
#
# The engine is docker when a Docker daemon answers, podman otherwise
# (daemonless; installed with apt-get when missing and run as root). When
# the official base images (rust:<version>-bookworm, debian:bookworm-slim)
# cannot be pulled, as on a machine that reaches no image registry, or with
# --local-bases, it builds stand-ins for them first: Debian bookworm from
# Debian's packages (mmdebstrap), plus this machine's Rust toolchain in the
# builder. The Dockerfile is the same either way; only its BUILDER_IMAGE
# and RUNTIME_IMAGE build arguments change.
#
# The containers use the host's network and bind loopback addresses only,
# on ports chosen free at the start. Everything it starts is removed on
# exit (the image too, unless --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

engine=""
local_bases=0
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine="${2:?--engine needs docker or podman}"; shift 2 ;;
    --local-bases) local_bases=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '== %s\n' "$*"; }
fail() { printf 'image test FAILED: %s\n' "$*" >&2; exit 1; }

apt_install() {
  deploy/apt-install.sh "the image test needs it" "$@" || fail "cannot install $* with apt-get"
}

if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  else
    engine=podman
  fi
fi
case "$engine" in
  docker) docker info >/dev/null 2>&1 || fail "no Docker daemon answers (try --engine podman)" ;;
  podman)
    if ! command -v podman >/dev/null 2>&1; then
      [ "$(id -u)" = 0 ] || fail "podman is missing (apt-get install podman, as root)"
      log "installing podman (apt-get)"
      apt_install podman
    fi ;;
  *) fail "--engine must be docker or podman, not $engine" ;;
esac
# The engine's command, and what `run` needs besides the image's flags.
E=("$engine")
run_flags=()
quiet=() # docker import has no --quiet
if [ "$engine" = podman ]; then
  # runc, not crun: crun refuses a host with cgroups v1 and v2 mounted
  # side by side ("hybrid mode"), as this project's CI machine has.
  if ! command -v runc >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "runc is missing (apt-get install runc, as root)"
    log "installing runc (apt-get)"
    apt_install runc
  fi
  E=(podman --runtime runc)
  # Podman raises a root container's open-file and process limits to its
  # own maximum; where the host's hard limits are lower (a sandboxed CI
  # machine) the runtime may not set them. A peer needs neither much.
  nofile=$(ulimit -Hn)
  if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
  run_flags=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
  quiet=(--quiet)
fi
log "engine: $engine ($("${E[@]}" --version))"

# Names: unique per run, so two runs never share a container or volume.
run_id="rkvimg$$"
image="localhost/ringkv:image-test-$$"
peers=(1 2 3)
work=$(mktemp -d)

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ]; then
    # What the engine said besides (podman, without systemd, logs that it
    # cannot schedule health checks: this script runs them itself).
    if [ -s "$work/engine.log" ]; then
      echo "---- engine messages" >&2
      grep -v 'systemd connection' "$work/engine.log" | tail -20 >&2
    fi
    for p in "${peers[@]}"; do
      if "${E[@]}" container exists "$run_id-$p" 2>/dev/null \
        || "${E[@]}" inspect "$run_id-$p" >/dev/null 2>&1; then
        echo "---- last log lines of $run_id-$p" >&2
        "${E[@]}" logs --tail 30 "$run_id-$p" >&2 2>&1
      fi
    done
  fi
  for p in "${peers[@]}"; do
    "${E[@]}" kill "$run_id-$p" >/dev/null 2>&1
    "${E[@]}" rm -f "$run_id-$p" >/dev/null 2>&1
    "${E[@]}" volume rm -f "$run_id-data-$p" >/dev/null 2>&1
  done
  if [ "$keep" = 0 ]; then
    "${E[@]}" rmi -f "$image" >/dev/null 2>&1
  else
    echo "kept the image $image"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
# A signal ends the script through exit, so the cleanup runs then too.
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

# ---- base images ----------------------------------------------------------
rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)
debian_release=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' Dockerfile)
builder_image="docker.io/library/rust:${rust_version}-${debian_release}"
runtime_image="docker.io/library/debian:${debian_release}-slim"

if [ "$local_bases" = 0 ]; then
  if ! timeout 300 "${E[@]}" pull -q "$runtime_image" >"$work/pull.log" 2>&1 \
    || ! timeout 600 "${E[@]}" pull -q "$builder_image" >>"$work/pull.log" 2>&1; then
    log "cannot pull $builder_image and $runtime_image ($(tail -n 1 "$work/pull.log" | cut -c1-200)): building stand-ins from Debian's packages"
    local_bases=1
  fi
fi

image_exists() { "${E[@]}" image inspect "$1" >/dev/null 2>&1; }

if [ "$local_bases" = 1 ]; then
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "mmdebstrap is missing (apt-get install mmdebstrap, as root)"
    log "installing mmdebstrap (apt-get)"
    apt_install mmdebstrap
  fi
  command -v rustc >/dev/null 2>&1 || fail "the builder stand-in needs this machine's Rust toolchain (rustc)"
  host_rust=$(rustc --version | awk '{ split($2, v, "."); print v[1] "." v[2] }')
  if [ "$host_rust" != "$rust_version" ]; then
    log "note: the Dockerfile names Rust $rust_version, the builder stand-in gets this machine's $host_rust"
  fi
  sysroot=$(rustc --print sysroot)
  # Debian's slim images drop documentation, manual pages and locales.
  slim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')

  runtime_image="localhost/ringkv-stand-in/debian:${debian_release}-slim"
  if ! image_exists "$runtime_image"; then
    log "stand-in $runtime_image (mmdebstrap, minbase)"
    mmdebstrap --quiet --variant=minbase --format=tar "${slim[@]}" \
      "$debian_release" "$work/runtime.tar" >"$work/mmdebstrap.log" 2>&1 \
      || { cat "$work/mmdebstrap.log" >&2; fail "mmdebstrap (runtime base)"; }
    "${E[@]}" import "${quiet[@]}" --change 'CMD ["/bin/bash"]' "$work/runtime.tar" "$runtime_image" >/dev/null
    rm -f "$work/runtime.tar"
  fi

  builder_image="localhost/ringkv-stand-in/rust:$(rustc --version | awk '{print $2}')-${debian_release}"
  if ! image_exists "$builder_image"; then
    log "stand-in $builder_image (mmdebstrap, gcc, this machine's Rust $(rustc --version | awk '{print $2}'))"
    # The toolchain without its documentation, where the official image
    # keeps it: cargo and rustc on PATH, CARGO_HOME /usr/local/cargo. And
    # the certificate authorities this machine added to its own trust
    # store, so that cargo reaches crates.io the way it does here (through
    # whatever this machine's network demands).
    mmdebstrap --quiet --variant=minbase --format=tar "${slim[@]}" \
      --include=ca-certificates,gcc,libc6-dev \
      --customize-hook="mkdir -p \"\$1/usr/local/rust\" \"\$1/usr/local/cargo/bin\"" \
      --customize-hook="tar -C '$sysroot' --exclude=./share -cf - . | tar -C \"\$1/usr/local/rust\" -xf -" \
      --customize-hook="ln -s ../../rust/bin/cargo \"\$1/usr/local/cargo/bin/cargo\"" \
      --customize-hook="ln -s ../../rust/bin/rustc \"\$1/usr/local/cargo/bin/rustc\"" \
      --customize-hook="if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then cp /usr/local/share/ca-certificates/*.crt \"\$1/usr/local/share/ca-certificates/\" && chroot \"\$1\" update-ca-certificates >/dev/null; fi" \
      "$debian_release" "$work/builder.tar" >"$work/mmdebstrap.log" 2>&1 \
      || { cat "$work/mmdebstrap.log" >&2; fail "mmdebstrap (builder base)"; }
    "${E[@]}" import "${quiet[@]}" \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      "$work/builder.tar" "$builder_image" >/dev/null
    rm -f "$work/builder.tar"
  fi
fi

# ---- build ----------------------------------------------------------------
log "building $image from the Dockerfile (builder $builder_image, runtime $runtime_image)"
build_args=(--build-arg "BUILDER_IMAGE=$builder_image" --build-arg "RUNTIME_IMAGE=$runtime_image" -t "$image" .)
start=$(date +%s)
if [ "$engine" = podman ]; then
  # The docker format keeps HEALTHCHECK (OCI image configs have no field
  # for it); the host network lets cargo reach crates.io; no layers kept
  # (each run would leave a builder image of about 1 GB behind: cargo's
  # target cache mount keeps rebuilds incremental instead).
  "${E[@]}" build --format docker --layers=false --pull=never --network host "${run_flags[@]}" "${build_args[@]}" >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log" >&2; fail "the image does not build"; }
else
  DOCKER_BUILDKIT=1 "${E[@]}" build --network host "${build_args[@]}" >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log" >&2; fail "the image does not build"; }
fi
log "built in $(( $(date +%s) - start )) s"

# ---- what the image says of itself ----------------------------------------
inspect() { "${E[@]}" image inspect -f "$1" "$image"; }
user=$(inspect '{{.Config.User}}')
[ "$user" = "10001:10001" ] || fail "the image runs as '$user', not 10001:10001"
inspect '{{json .Config.Volumes}}' | grep -q '"/data"' || fail "no /data volume: $(inspect '{{json .Config.Volumes}}')"
health=$(inspect '{{json .Config.Healthcheck}}')
echo "$health" | grep -q 'ringkv' || fail "no HEALTHCHECK running ringkv health: $health"
inspect '{{json .Config.Entrypoint}}' | grep -q '"ringkv"' || fail "the entry point is not ringkv"
size=$(inspect '{{.Size}}')
log "image: user $user, volume /data, healthcheck $health, $((size / 1000000)) MB"
version=$("${E[@]}" run "${run_flags[@]}" --rm "$image" --version 2>>"$work/engine.log")
log "runs: $version"

# ---- a three-peer cluster from the image ----------------------------------
command -v ss >/dev/null 2>&1 || fail "ss (iproute2) is missing: it finds free ports"
free_port() { # a port that nothing binds on loopback, TCP and UDP
  local p
  while :; do
    # Below the usual ephemeral range (32768 up), where an outgoing
    # socket could take the port before the peer binds it.
    p=$(( 20000 + RANDOM % 12000 ))
    if ! ss -Htuln "( sport = :$p )" | grep -q .; then echo "$p"; return; fi
  done
}
declare -A quic admin
for p in "${peers[@]}"; do quic[$p]=$(free_port); admin[$p]=$(free_port); done

# The cluster key, readable by the image's user only, mounted read-only.
"${E[@]}" run "${run_flags[@]}" --rm "$image" keygen >"$work/cluster.key" 2>>"$work/engine.log"
chown 10001:10001 "$work/cluster.key"
chmod 0400 "$work/cluster.key"

# --listen and --admin come from the environment, as the image presets
# them: its HEALTHCHECK asks RINGKV_ADMIN.
start_peer() { # N [more ringkv node flags]
  local p=$1; shift
  "${E[@]}" run "${run_flags[@]}" -d --name "$run_id-$p" --network host \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --add-host "p1.ringkv.test:127.0.0.1" \
    -v "$run_id-data-$p:/data" \
    -v "$work/cluster.key:/etc/ringkv/cluster.key:ro" \
    -e RUST_LOG=info \
    -e "RINGKV_LISTEN=127.0.0.1:${quic[$p]}" -e "RINGKV_ADMIN=127.0.0.1:${admin[$p]}" \
    "$image" node --name "img$p" \
    --cluster-key-file /etc/ringkv/cluster.key --leave-timeout 60s "$@" >/dev/null 2>>"$work/engine.log"
}

healthy() { # N: the image's own HEALTHCHECK passes now
  local p=$1
  if [ "$engine" = podman ]; then
    "${E[@]}" healthcheck run "$run_id-$p" >/dev/null 2>>"$work/engine.log"
  else
    # docker runs the check itself; ask it the same way it does.
    "${E[@]}" exec "$run_id-$p" ringkv health --timeout 4s >/dev/null 2>&1
  fi
}

wait_healthy() { # N SECONDS
  local p=$1 deadline=$(( $(date +%s) + $2 ))
  until healthy "$p"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "peer $p is not healthy after $2 s"
    "${E[@]}" inspect -f '{{.State.Running}}' "$run_id-$p" | grep -q true || fail "peer $p exited"
    sleep 1
  done
}

member() { # NAME FIELD: FIELD of member NAME as peer 1 sees it ("" if absent or no answer)
  local json
  json=$(cli 1 members --json 2>/dev/null) || return 0
  printf '%s' "$json" | python3 -c '
import json, sys
name, field = sys.argv[1], sys.argv[2]
for m in json.load(sys.stdin)["members"]:
    if m["name"] == name:
        print(m[field])
' "$1" "$2"
}

own_id() { # N: peer N's node id, as it reports itself ("" if no answer)
  local json
  json=$(cli "$1" members --json 2>/dev/null) || return 0
  printf '%s' "$json" | python3 -c '
import json, sys
print(next((m["id"] for m in json.load(sys.stdin)["members"] if m.get("this_peer")), ""))
'
}

cli() { # N ringkv arguments...: the CLI inside peer N's container
  local p=$1; shift
  "${E[@]}" exec "$run_id-$p" ringkv "$@" --peer "127.0.0.1:${quic[$p]}" --cluster-key-file /etc/ringkv/cluster.key
}

log "starting 3 peers (seeds by name: p1.ringkv.test)"
start_peer 1
wait_healthy 1 60
start_peer 2 --join "p1.ringkv.test:${quic[1]}"
start_peer 3 --join "p1.ringkv.test:${quic[1]}"
wait_healthy 2 60
wait_healthy 3 60
deadline=$(( $(date +%s) + 60 ))
until [ "$(member img1 state)$(member img2 state)$(member img3 state)" = alivealivealive ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { cli 1 members >&2 || true; fail "peer 1 does not see 3 live members"; }
  sleep 1
done
log "3 peers up and healthy"

uid=$("${E[@]}" exec "$run_id-1" id -u)
[ "$uid" = 10001 ] || fail "the peer runs as uid $uid"
owner=$("${E[@]}" exec "$run_id-1" stat -c '%u' /data)
[ "$owner" = 10001 ] || fail "/data is owned by uid $owner"
# Read-only, not merely not ours: the error must be the mount's.
rofs=$("${E[@]}" exec "$run_id-1" sh -c 'touch /x 2>&1' || true)
case "$rofs" in
  *'Read-only file system'*) ;;
  *) fail "the root file system is not read-only ('$rofs')" ;;
esac

cli 1 put --consistency all image-test-key "written through peer 1" >/dev/null
got=$(cli 2 get --consistency quorum image-test-key)
[ "$got" = "written through peer 1" ] || fail "peer 2 read '$got'"
log "a write through peer 1 is read through peer 2"

id_before=$(own_id 2)
log "restarting peer 2 (its data stays on its volume)"
"${E[@]}" restart -t 90 "$run_id-2" >/dev/null 2>>"$work/engine.log"
wait_healthy 2 90
id_after=$(own_id 2)
[ -n "$id_before" ] && [ "$id_before" = "$id_after" ] \
  || fail "peer 2's identity changed across a restart ('$id_before' -> '$id_after')"
got=$(cli 2 get --consistency one image-test-key)
[ "$got" = "written through peer 1" ] || fail "after its restart peer 2 holds '$got'"
log "peer 2 came back as $id_after with its data"

log "stopping peer 3 (SIGTERM: graceful leave)"
"${E[@]}" stop -t 90 "$run_id-3" >/dev/null 2>>"$work/engine.log"
code=$("${E[@]}" inspect -f '{{.State.ExitCode}}' "$run_id-3")
[ "$code" = 0 ] || fail "peer 3 exited with $code when stopped (the image's STOPSIGNAL must be SIGTERM, the graceful leave)"
# Into a variable first: `logs | grep -q` could fail on SIGPIPE (pipefail).
logs3=$("${E[@]}" logs "$run_id-3" 2>&1)
case "$logs3" in
  *'handoff incomplete'*) fail "peer 3 left with its handoff incomplete" ;;
  *'node img3 left the cluster'*) ;;
  *) fail "peer 3 did not log its leave" ;;
esac
deadline=$(( $(date +%s) + 30 ))
until [ "$(member img3 state)" = left ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { cli 1 members >&2 || true; fail "peer 1 does not see peer 3 as left"; }
  sleep 1
done
got=$(cli 1 get --consistency quorum image-test-key)
[ "$got" = "written through peer 1" ] || fail "after peer 3 left, peer 1 read '$got'"
log "peer 3 left and exited 0; the key is still there"

echo "image test passed: $version, $((size / 1000000)) MB, engine $engine"
