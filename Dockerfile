# Multi-stage build of the `warden` binary. (Not exercised by CI: the build machines have
# no Docker engine.) Note: Docker's default seccomp profile blocks io_uring; Warden logs
# it and falls back to epoll (or set `gateway.io_driver: epoll`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release -p controlplane --bin warden

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 warden
COPY --from=build /src/target/release/warden /usr/local/bin/warden
USER warden
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/warden"]
CMD ["serve", "-c", "/etc/warden/warden.yaml"]
