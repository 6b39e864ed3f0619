#!/usr/bin/env bash
# Start the gateway with Docker Compose: secrets on the first run (never
# overwritten later), build, then wait until every service is healthy.
#   scripts/up.sh                    # your modems (make add-modem; compose.modems.yml)
#   scripts/up.sh --profile demo     # plus two emulated modems
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-compose.sh
first_start=""
[ -n "$(sed -n 's/^ADMIN_PASSWORD=//p' "$env_file" 2>/dev/null | tail -n 1)" ] || first_start=1
# Its own first-login note is left out: the box at the end says it all.
scripts/setup-secrets.sh "$env_file" | sed '/^$/,$d'
# The modem-worker image once (its build-only service), then the others:
# no image per modem, no dangling images at each start.
compose --profile build build
# Without the demo profile its emulated modems leave (and their SIMs with them).
compose "$@" up -d --no-build --remove-orphans --wait --wait-timeout 300
compose "$@" ps
# Demo SIMs leave with the demo profile: without it, the emulated modems'
# SIMs become inactive (the sweeper's own mark, so `make demo` revives them
# once their workers see them again) and nothing is routed to them.
case " $* " in
  *" demo "*|*"--profile=demo"*) ;;
  *)
    demo_section="$(sed -n '/^  # ---- Demo/,/^[a-z]/p' docker-compose.yml)"
    demo_ids="$(printf '%s\n' "$demo_section" | sed -n 's/^[[:space:]]*MODEM_ID:[[:space:]]*\([A-Za-z0-9_-]*\).*/\1/p' | paste -sd, -)"
    demo_services="$(printf '%s\n' "$demo_section" | sed -n 's/^  \([a-z0-9-]*\):$/\1/p')"
    # Still running from an earlier `make demo`: they leave too.
    # shellcheck disable=SC2086
    [ -z "$demo_services" ] || compose --profile demo rm -s -f $demo_services >/dev/null 2>&1 || true
    if [ -n "$demo_ids" ]; then
      db="$(sed -n 's/^POSTGRES_DB=//p' "$env_file" | tail -n 1)"
      user="$(sed -n 's/^POSTGRES_USER=//p' "$env_file" | tail -n 1)"
      compose exec -T postgres psql -X -q -U "${user:-smsgw}" -d "${db:-smsgw}" -v ON_ERROR_STOP=1 \
        -v ids="$demo_ids" -f - <scripts/retire-demo-sims.sql >/dev/null
    fi
    ;;
esac
scripts/login-box.sh "$first_start"
