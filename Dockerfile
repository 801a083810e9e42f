# syntax=docker/dockerfile:1
# The agentwatch image: `docker build -t agentwatch:0.1.0 .`
#
# Build stage: the Rust toolchain on Debian 12. rdkafka-sys compiles librdkafka from
# source and links it statically (gcc, make and zlib headers are in this image); the
# protobuf schema is compiled by protox in build.rs, so no protoc is needed.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target/ between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin agentwatch \
    && cp target/release/agentwatch /usr/local/bin/agentwatch

# Runtime stage: the binary needs only glibc, libgcc_s and zlib (libz.so.1, which
# librdkafka uses for compression and which distroless/cc lacks), all of which
# Debian 12 slim has. HTTPS to BlueKing uses rustls with built-in roots, so no
# ca-certificates package either. Same Debian release as the build stage: same glibc.
FROM debian:bookworm-slim
RUN groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
COPY --from=build /usr/local/bin/agentwatch /usr/local/bin/agentwatch
COPY agentwatch.example.toml /usr/share/doc/agentwatch/agentwatch.example.toml
LABEL org.opencontainers.image.title="agentwatch" \
      org.opencontainers.image.description="Streams BlueKing GSE agent status changes to Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
# /metrics, /healthz, /readyz (set http.listen = "0.0.0.0:9108" in a container).
EXPOSE 9108
ENTRYPOINT ["agentwatch"]
CMD ["run", "--config", "/etc/agentwatch/agentwatch.toml"]
