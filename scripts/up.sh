#!/usr/bin/env bash
# Start the gateway with Docker Compose: secrets on the first run (never
# overwritten later), build, then wait until every service is healthy.
#   scripts/up.sh                    # your modems (docker-compose.yml)
#   scripts/up.sh --profile demo     # plus two emulated modems
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-secrets.sh .env
docker compose "$@" up -d --build --wait --wait-timeout 300
docker compose "$@" ps
port="$(sed -n 's/^DASHBOARD_HTTPS_PORT=//p' .env | tail -n 1)"
echo
echo "The gateway is up: https://$(hostname -f 2>/dev/null || hostname)${port:+:$port}/"
echo "(a self-signed certificate until you install your own; see docs/deployment.md)"
