#!/usr/bin/env bash
# Everything the tests need on a fresh machine, then the whole suite:
# Debian packages (gammu: an AT client nobody here wrote, for the emulator;
# nginx and chromium: the dashboard tests; iproute2 and iptables: the test
# WAN of tests/fleet, which needs root), the virtualenv from the lock
# (requirements/dev.txt, every file checked against its hash), the project.
# Postgres, Mosquitto and Redis must already listen on 127.0.0.1 (README).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check-services.sh

need=()
command -v gammu >/dev/null || need+=(gammu)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${need[*]} (Debian packages)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --require-hashes --no-deps -r requirements/dev.txt
# The lock brought setuptools: our own packages build with it, offline.
.venv/bin/pip install -q --no-deps --no-build-isolation \
  -e common -e services/api -e services/modem-worker -e services/stats-collector
exec .venv/bin/pytest "$@"
