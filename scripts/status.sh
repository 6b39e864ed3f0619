#!/usr/bin/env bash
# One screen: the containers, the modems with their SIMs and problems, the queue.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-compose.sh

echo "== containers"
compose --profile '*' ps --format 'table {{.Service}}\t{{.Status}}'
echo
if ! compose exec -T postgres true 2>/dev/null; then
  echo "(postgres is not running: no modems or queue to show)"
  exit 0
fi
db="$(sed -n 's/^POSTGRES_DB=//p' "$env_file" | tail -n 1)"
user="$(sed -n 's/^POSTGRES_USER=//p' "$env_file" | tail -n 1)"
psql() { compose exec -T postgres psql -X -q -U "${user:-smsgw}" -d "${db:-smsgw}" "$@"; }
echo "== modems"
psql -c "SELECT m.id AS modem, CASE WHEN m.online THEN 'online' ELSE 'offline' END AS state,
           m.signal_quality AS csq, m.registration, m.operator,
           coalesce(string_agg(s.id || ':' || coalesce(s.number, '?') || ' ' || s.status, ', '), '-') AS sims,
           coalesce(m.last_error, '') AS problem
         FROM modems m LEFT JOIN sim_cards s ON s.modem_id = m.id
         GROUP BY m.id ORDER BY m.id"
echo "== queue"
psql -c "SELECT status, count(*) AS messages, min(timestamp) AS oldest FROM messages
         WHERE direction = 'outbound' AND status IN ('queued', 'sending', 'sent')
         GROUP BY status ORDER BY status"
