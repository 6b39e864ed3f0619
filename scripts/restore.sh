#!/usr/bin/env bash
# Restore a dump made by scripts/backup.sh into the running stack:
#   scripts/restore.sh backups/smsgw-20260101T000000Z.dump [--yes]
# Stops everything that writes to the database, replaces the database's
# contents with the dump in one transaction, then starts those services again
# (db-setup applies newer migrations when the dump is older, and gives every
# service its grants back).
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-}"
if [ -z "$file" ] || [ ! -f "$file" ]; then
  echo "usage: scripts/restore.sh BACKUP_FILE [--yes]   (make restore FILE=backups/...dump)" >&2
  exit 2
fi
if [ "${2:-}" != "--yes" ]; then
  read -r -p "Replace ALL gateway data with $file? Type 'restore' to go on: " answer
  [ "$answer" = "restore" ] || { echo "aborted"; exit 1; }
fi

# Check the file before anything is stopped.
if ! docker compose exec -T postgres pg_restore --list >/dev/null <"$file"; then
  echo "restore: $file is not a pg_dump custom-format archive" >&2
  exit 1
fi

writers=()
for service in $(docker compose ps --services --status running); do
  case "$service" in postgres|mosquitto|redis) ;; *) writers+=("$service") ;; esac
done
if [ ${#writers[@]} -gt 0 ]; then
  echo "stopping ${writers[*]}"
  docker compose stop "${writers[@]}"
fi

# The whole schema is replaced, not only the objects the dump names: tables a
# newer migration added would otherwise survive beside an older alembic_version.
# The dump becomes SQL first, so a damaged archive fails before anything is
# dropped; then drop, recreate and restore are one transaction.
status=0
docker compose exec -T postgres sh -c '
  set -e
  sql=$(mktemp)
  trap "rm -f \"$sql\"" EXIT
  pg_restore --no-owner -f "$sql"
  { echo "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public;"; cat "$sql"; } |
    psql -X -q -v ON_ERROR_STOP=1 --single-transaction -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f - >/dev/null' \
  <"$file" || status=$?

# The restored objects belong to the superuser (the dump is --no-owner):
# db-setup hands them to the owner role, applies newer migrations as that
# role and re-grants every service its tables (postgres/setup.py).
if [ $status -eq 0 ]; then
  echo "db-setup: roles, migrations, grants"
  docker compose run --rm -T --no-deps db-setup || status=$?
fi

if [ ${#writers[@]} -gt 0 ]; then
  echo "starting ${writers[*]}"
  docker compose start "${writers[@]}"
fi
if [ $status -ne 0 ]; then
  echo "restore FAILED (exit $status): see above" >&2
  exit $status
fi
echo "restored $file"
