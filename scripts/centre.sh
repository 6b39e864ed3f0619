#!/usr/bin/env bash
# `make centre`: this stack becomes the centre of several sites
# (compose.centre.yml; docs/deployment.md, "Several sites"): its Postgres and
# broker are published to edge nodes, TLS only. Recorded in .env
# (SMSGW_CENTRE=1), so that every later `make up` keeps it; then started.
#   make centre [NAMES="DNS:centre.example,IP:192.0.2.10"]   # the names edge nodes use
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-compose.sh
# set_env NAME VALUE: replace NAME's line in the env file, or add one.
set_env() {
  if grep -q "^$1=" "$env_file"; then
    sed -i "s|^$1=.*|$1=$2|" "$env_file"
  else
    printf '%s=%s\n' "$1" "$2" >>"$env_file"
  fi
}
if [ ! -e "$env_file" ]; then
  cp .env.example "$env_file"
  chmod 600 "$env_file"
fi
set_env SMSGW_CENTRE 1
if [ -n "${NAMES:-}" ]; then
  if ! printf '%s' "$NAMES" | grep -qE '^((DNS|IP):[A-Za-z0-9.:_-]+)(,(DNS|IP):[A-Za-z0-9.:_-]+)*$'; then
    echo "make centre: NAMES must look like DNS:centre.example,IP:192.0.2.10" >&2
    exit 2
  fi
  set_env CENTRE_TLS_NAMES "$NAMES"
fi
record_compose_files
scripts/up.sh "$@"
cat <<'NOTE'

This stack is now a centre: Postgres and the broker listen for edge nodes
(TLS only) on the ports of CENTRE_POSTGRES_PORT (5432) and CENTRE_MQTT_PORT (8883).
Give each edge node the certificate it verifies them with:
  docker compose exec dashboard cat /etc/nginx/tls/cert.pem > centre-cert.pem
and a token from the dashboard's "Edge nodes" page.
NOTE
