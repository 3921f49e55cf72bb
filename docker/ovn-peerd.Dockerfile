# syntax=docker/dockerfile:1
# ovn-peerd: built with the Rust toolchain image, run on a slim Debian as a non-root user.
# Build context: the repository root (docker build -f docker/ovn-peerd.Dockerfile .).

FROM rust:1-bookworm AS build
# No protoc needed: build.rs compiles proto/ with protox (pure Rust). The default allocator,
# jemalloc, is compiled from source and linked in statically: this image (buildpack-deps) has
# the sh, make and cc it needs; the runtime image needs nothing for it.
WORKDIR /src
# Everything the manifest names must be present, benches included, or cargo refuses it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY migrations ./migrations
# The checked SQL statements (sqlx offline data) and SQLX_OFFLINE=true: no database at build.
COPY .sqlx ./.sqlx
COPY .cargo ./.cargo
COPY benches ./benches
# The workspace member (test fixtures): cargo loads its manifest even for --bin ovn-peerd.
COPY tests/support ./tests/support
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ovn-peerd \
    && install -m 0755 target/release/ovn-peerd /usr/local/bin/ovn-peerd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin ovnpeerd
COPY --from=build /usr/local/bin/ovn-peerd /usr/local/bin/ovn-peerd
USER 10001:10001
# In a container, listen on all of its interfaces; publish ports deliberately.
ENV OVN_PEERD_LISTEN=0.0.0.0:50051 \
    OVN_PEERD_METRICS_LISTEN=0.0.0.0:9150 \
    OVN_PEERD_LOG_FORMAT=json
EXPOSE 50051 9150
ENTRYPOINT ["/usr/local/bin/ovn-peerd"]
