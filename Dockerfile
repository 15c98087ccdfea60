# One image for every tocsin service and the CLI; the first argument picks the service:
#   docker run IMAGE router --config /etc/tocsin/tocsin.toml
# Build arguments (pin them for a reproducible image):
#   RUST_IMAGE  the build toolchain image (default rust:1.95-bookworm)
#   BASE_IMAGE  the runtime base (default debian:bookworm-slim)
# `cargo build --locked` uses Cargo.lock as committed, so the same source builds the same
# dependency set; SOURCE_DATE_EPOCH may be passed for timestamps.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p tocsin -p tocsin-ingestor -p tocsin-router -p tocsin-history -p tocsin-delivery -p tocsin-api \
      -p tocsin-archiver \
 && mkdir /out \
 && cp target/release/tocsin target/release/tocsin-ingestor target/release/tocsin-router \
       target/release/tocsin-history target/release/tocsin-delivery target/release/tocsin-api \
       target/release/tocsin-archiver /out/

FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/tocsin --create-home tocsin
COPY --from=build /out/ /usr/local/bin/
COPY deploy/docker-entrypoint.sh /usr/local/bin/tocsin-entrypoint
COPY deploy/tocsin.example.toml /etc/tocsin/tocsin.example.toml
USER 10001:10001
WORKDIR /var/lib/tocsin
ENTRYPOINT ["/usr/local/bin/tocsin-entrypoint"]
CMD ["help"]
