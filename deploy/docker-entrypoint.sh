#!/bin/sh
# The image's entrypoint: the first argument is a service (ingestor, router, history, delivery,
# api, archiver) or `tocsin` for the CLI; the rest is passed on (e.g. --config /etc/tocsin/tocsin.toml).
set -eu
service="${1:-help}"
[ $# -gt 0 ] && shift
case "$service" in
  ingestor|router|history|delivery|api|archiver) exec "/usr/local/bin/tocsin-$service" "$@" ;;
  tocsin|cli) exec /usr/local/bin/tocsin "$@" ;;
  *)
    echo "usage: IMAGE ingestor|router|history|delivery|api|archiver [--config FILE]" >&2
    echo "       IMAGE tocsin <command>   (the CLI)" >&2
    [ "$service" = help ] && exit 0
    exit 64 ;;
esac
