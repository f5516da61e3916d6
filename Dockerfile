# ringkv: a multi-stage build. The builder compiles the release binary on
# the official Rust image; the runtime is Debian slim (same glibc as the
# builder), a non-root user, data on the /data volume.
#
#   docker build -t ringkv:dev .
#   docker run --rm -v ringkv-data:/data -p 7000:7000/udp ringkv:dev \
#     node --data /data --listen 0.0.0.0:7000 --advertise HOST_IP:7000 ...
#
# See docs/deploy.md (Kubernetes manifests in deploy/kubernetes/).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
# The base images; deploy/image-test.sh replaces them with stand-ins made
# from Debian's packages where no image registry can be reached.
# Fully qualified, so that podman and buildah need no short-name
# configuration (or prompt) to find them.
ARG BUILDER_IMAGE=docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE}
ARG RUNTIME_IMAGE=docker.io/library/debian:${DEBIAN_RELEASE}-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
# The workspace's crates (testbed too: the binary embeds its CLI). The
# registry and target caches (BuildKit) keep rebuilds incremental. The
# image's binary has no debug line tables (19 MB instead of 92): its
# symbols stay, so a backtrace still names its functions.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY ring ring
COPY gossip gossip
COPY storage storage
COPY node node
COPY testbed testbed
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked -p ringkv-node \
    && install -D -m 0755 target/release/ringkv /out/ringkv

FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: none of ringkv's traffic needs it (the cluster key is
# its own CA), but tools run in the container often do; tini is not
# needed: ringkv handles SIGTERM itself (graceful leave) as PID 1.
RUN groupadd --system --gid 10001 ringkv \
    && useradd --system --uid 10001 --gid ringkv --home-dir /data --shell /usr/sbin/nologin ringkv \
    && mkdir -p /data \
    && chown ringkv:ringkv /data \
    && chmod 0700 /data
COPY --from=builder /out/ringkv /usr/local/bin/ringkv
USER 10001:10001
VOLUME ["/data"]
WORKDIR /data
# 7000/udp: gossip and requests (QUIC); 8001/tcp: admin HTTP (/health,
# /metrics); 6379/tcp: the Redis protocol, when --resp is given.
EXPOSE 7000/udp 8001/tcp 6379/tcp
ENV RINGKV_DATA=/data \
    RINGKV_LISTEN=0.0.0.0:7000 \
    RINGKV_ADMIN=0.0.0.0:8001
# `ringkv health` GETs /health on the admin HTTP (exempt from the admin
# token) and exits 0 on 200, 1 otherwise; a wildcard --admin is asked on
# loopback.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["ringkv", "health", "--timeout", "4s"]
# SIGTERM: the peer hands its ranges over and leaves; give it time
# (docker stop -t 300, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ringkv"]
CMD ["node"]
