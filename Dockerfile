# syntax=docker/dockerfile:1
# Build: docker build -t stsgate .   (BuildKit, the default since Docker 23; podman/buildah too)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io registry and the target dir between builds, so a rebuild after a
# source change recompiles only the workspace's own crates. The binary is copied out of the
# cached target dir in the same step (the cache is not part of the image).
RUN --mount=type=cache,id=stsgate-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=stsgate-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=stsgate-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin stsgate \
 && install -m 0755 target/release/stsgate /usr/local/bin/stsgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin stsgate
COPY --from=build /usr/local/bin/stsgate /usr/local/bin/stsgate
USER stsgate
EXPOSE 8080 8081
ENV STSGATE_PUBLIC_LISTEN=0.0.0.0:8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["stsgate"]
CMD ["serve"]
