#!/usr/bin/env bash
# Installs the Debian packages the lab needs, when they are missing. As root it runs apt-get;
# otherwise it stops and names what to install.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have redis-server || need+=(redis-server)
have prometheus || need+=(prometheus)
have prometheus-alertmanager || need+=(prometheus-alertmanager)
have docker-registry || need+=(docker-registry)
have openssl || need+=(openssl)
have flock || need+=(util-linux)
have dot || need+=(graphviz)
# The dashboard's browser tests drive Debian's chromium headless (test/browser).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "lab: missing Debian packages: ${need[*]}" >&2
  echo "lab: install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
echo "lab: installing ${need[*]} (apt, about 30 s, once)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
