# Multi-stage build of the `warden` binary. (Not exercised by CI: the build machines have
# no Docker engine.) Note: Docker's and Kubernetes' default seccomp profiles block io_uring;
# Warden logs it and falls back to epoll (or set `gateway.io_driver: epoll`, as the Helm chart
# does). It runs as the numeric user 10001:10001, the chart's runAsUser/runAsGroup: a numeric
# USER lets the kubelet verify runAsNonRoot, and nothing in the image needs to be writable
# (readOnlyRootFilesystem; the chart mounts /tmp) but the state volume.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release -p controlplane --bin warden

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 warden \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin warden \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/warden
COPY --from=build /src/target/release/warden /usr/local/bin/warden
USER 10001:10001
# mimalloc commits its arena as it is used, not at start: 10-20 MiB less resident idle, the same
# instructions per call (docs/performance.md, "Memory at start and after a login").
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
# The default state store (SQLite) when the config has no `state.url`: mount a volume here to
# keep sessions, keys and logins across container restarts (replicas use PostgreSQL instead).
VOLUME /var/lib/warden
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/warden"]
CMD ["serve", "-c", "/etc/warden/warden.yaml", "--data-dir", "/var/lib/warden"]
