#!/usr/bin/env bash
# `make edge`: join this edge node to its centre (once) and start its modem
# workers (docs/deployment.md, "Several sites").
#   make edge CENTRE=https://centre.example TOKEN=... CA=centre-cert.pem PORTS="/dev/serial/by-id/... ..."
#   make edge CENTRE=... TOKEN=... CA=... EMULATOR=generic     # emulated modems, to try it out
#   make edge                                                  # later: start (or update) the workers
#   make edge PORTS="..."                                      # a modem moved: new ports, same credentials
# Also DB_PORT and MQTT_PORT when the centre publishes other ports than 5432 and 8883.
set -euo pipefail
cd "$(dirname "$0")/.."
join=(scripts/edge-join.py)
[ -n "${PORTS:-}" ] && join+=(--ports "$PORTS")
[ -n "${EMULATOR:-}" ] && join+=(--emulator "$EMULATOR")
if [ -n "${TOKEN:-}" ]; then
  join+=(--centre "${CENTRE:?make edge: CENTRE=https://... is needed with TOKEN}" --token "$TOKEN")
  join+=(--ca "${CA:?make edge: CA=<the centre's certificate> is needed with TOKEN}")
  [ -n "${DB_PORT:-}" ] && join+=(--db-port "$DB_PORT")
  [ -n "${MQTT_PORT:-}" ] && join+=(--mqtt-port "$MQTT_PORT")
  "${join[@]}"
elif [ ! -f edge.env ]; then
  echo "make edge: not joined yet: make edge CENTRE=https://... TOKEN=... CA=... PORTS='...'" >&2
  exit 2
elif [ -n "${PORTS:-}${EMULATOR:-}" ]; then
  "${join[@]}" --compose-only
fi
compose() { docker compose -f compose.edge.yml --env-file edge.env "$@"; }
compose --profile build build
compose up -d --no-build --remove-orphans --wait --wait-timeout 180
compose ps
