#!/usr/bin/env bash
# Build tocsin's image where no registry can be pulled from: the runtime base is made by
# mmdebstrap from Debian's own packages (glibc, libgcc, tzdata and the CA bundle; a passwd
# naming user 10001; no shell, no package manager), imported, and the repository's Dockerfile
# built on it with the binary cargo already built (no toolchain image, nothing compiled again).
#   deploy/image/build.sh [BINARY] [TAG]
# (defaults: target/release/tocsin, and localhost/tocsin:<its version> and :latest — the tag the
# Helm chart renders is the same version, checked by helm/check.sh)
# Needs buildah, podman, runc and mmdebstrap (`make test-tools` installs them on Debian).
# (mmdebstrap runs no customize hooks for --variant=extract: the hooks are extract hooks.)
# Prints the image's size, compressed as a registry stores it; its SBOM (every Rust crate in the
# binary, CycloneDX) is in the image at /usr/share/doc/tocsin/sbom.cdx.json and in
# target/image/sbom.cdx.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/tocsin}
tag=${2:-}
base=localhost/tocsin-base:bookworm
for tool in buildah podman mmdebstrap runc; do
  command -v "$tool" >/dev/null || { echo "image: $tool is not installed (make test-tools)" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "image: no binary at $bin (cargo build -p tocsin first)" >&2; exit 1; }
version=$("$bin" --version | cut -d' ' -f2)
also=()
if [ -z "$tag" ]; then tag=localhost/tocsin:$version; also=(localhost/tocsin:latest); fi
# podman's default ulimits cannot be set in every container host (ENVIRONMENT: runc, not crun)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/image/containers.conf}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

if ! podman image exists "$base"; then
  mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1,tzdata,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --extract-hook='mkdir -p "$1/etc/ssl/certs" && cat "$1"/usr/share/ca-certificates/mozilla/*.crt > "$1/etc/ssl/certs/ca-certificates.crt"' \
    --extract-hook='printf "root:x:0:0:root:/root:/nonexistent\ntocsin:x:10001:10001:tocsin:/var/lib/tocsin:/nonexistent\n" > "$1/etc/passwd"; printf "root:x:0:\ntocsin:x:10001:\n" > "$1/etc/group"' \
    --extract-hook='mkdir -p "$1/var/lib/tocsin" "$1/tmp" && chown 10001:10001 "$1/var/lib/tocsin" && chmod 1777 "$1/tmp"' \
    bookworm "$work/base.tar"
  podman import --quiet "$work/base.tar" "$base" >/dev/null
fi

mkdir -p "$work/out" target/image
strip -o "$work/out/tocsin" "$bin"
python3 deploy/image/sbom.py "$version" > target/image/sbom.cdx.json
cp target/image/sbom.cdx.json "$work/out/"
# the context: the Dockerfile's COPYs and the prebuilt binary, not the repository's target/
mkdir -p "$work/ctx/deploy"
cp -r "$work/out" "$work/ctx/out"
cp deploy/tocsin.example.toml "$work/ctx/deploy/"
before=$(podman images --quiet --filter dangling=true | sort)
buildah bud --quiet --layers=false -f Dockerfile --build-arg BINARY=prebuilt \
  --build-arg BASE_IMAGE="$base" -t "$tag" "$work/ctx" >/dev/null
# the stages' images this build left behind (the prebuilt binary's), and no one else's
after=$(podman images --quiet --filter dangling=true | sort)
left=$(comm -13 <(echo "$before") <(echo "$after"))
[ -z "$left" ] || podman rmi --force $left >/dev/null
for t in "${also[@]}"; do podman tag "$tag" "$t"; done
size=$(podman save "$tag" | gzip -c | wc -c)
echo "image: $tag, $(( size / 1024 / 1024 )) MiB compressed ($(podman image inspect "$tag" --format '{{.Size}}') bytes unpacked)"
