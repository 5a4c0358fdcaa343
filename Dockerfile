# syntax=docker/dockerfile:1
# Build: docker build -t stsgate .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin stsgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin stsgate
COPY --from=build /src/target/release/stsgate /usr/local/bin/stsgate
USER stsgate
EXPOSE 8080 8081
ENV STSGATE_PUBLIC_LISTEN=0.0.0.0:8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["stsgate"]
CMD ["serve"]
