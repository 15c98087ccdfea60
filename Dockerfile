# One image for every tocsin service and the CLI: one multi-call binary, no shell. The first
# argument picks the service:
#   docker run IMAGE router --config /etc/tocsin/tocsin.toml
#   docker run IMAGE tocsin user list           (the CLI)
# Build arguments (pin them for a reproducible image):
#   RUST_IMAGE  the build toolchain image (default rust:1.95-bookworm)
#   BASE_IMAGE  the runtime base (default debian:bookworm-slim, with the CA bundle and tzdata
#               added); deploy/image/build.sh passes a base made by mmdebstrap instead
#   BINARY      `build` (compile in RUST_IMAGE) or `prebuilt` (./out/ of the build context
#               holds the binary and its SBOM: deploy/image/build.sh puts them there)
# `cargo build --locked` uses Cargo.lock as committed, so the same source builds the same
# dependency set; SOURCE_DATE_EPOCH may be passed for timestamps.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG BASE_IMAGE=registry-base
ARG BINARY=build

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tocsin \
 && mkdir /out \
 && strip -o /out/tocsin target/release/tocsin \
 && (command -v python3 >/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3)) \
 && python3 deploy/image/sbom.py "$(/out/tocsin --version | cut -d' ' -f2)" > /out/sbom.cdx.json

FROM scratch AS prebuilt
COPY out/ /out/

FROM debian:bookworm-slim AS registry-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/tocsin --create-home tocsin

FROM ${BINARY} AS binary

FROM ${BASE_IMAGE}
COPY --from=binary /out/tocsin /usr/local/bin/tocsin
# every Rust crate in the binary (CycloneDX; deploy/image/sbom.py)
COPY --from=binary /out/sbom.cdx.json /usr/share/doc/tocsin/sbom.cdx.json
COPY deploy/tocsin.example.toml /etc/tocsin/tocsin.example.toml
USER 10001:10001
WORKDIR /var/lib/tocsin
ENTRYPOINT ["/usr/local/bin/tocsin", "entrypoint"]
CMD ["help"]
