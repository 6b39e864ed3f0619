#!/usr/bin/env bash
# Dump the gateway's database (pg_dump, custom format) from the running
# postgres container into backups/ (or $BACKUP_DIR); keeps the newest
# $BACKUP_KEEP dumps (default 14). The stack keeps running meanwhile.
# Secrets are not in the dump: keep a copy of .env somewhere safe as well.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BACKUP_DIR:-backups}"
keep="${BACKUP_KEEP:-14}"
mkdir -p "$dir"
chmod 700 "$dir"
file="$dir/smsgw-$(date -u +%Y%m%dT%H%M%SZ).dump"

umask 077
docker compose exec -T postgres sh -c 'exec pg_dump -U "$POSTGRES_USER" -d "$POSTGRES_DB" --format=custom --no-owner' \
  >"$file.partial"
# An empty or truncated dump must never look like a backup.
if ! docker compose exec -T postgres pg_restore --list >/dev/null <"$file.partial"; then
  rm -f "$file.partial"
  echo "backup: the dump is not readable by pg_restore; nothing kept" >&2
  exit 1
fi
mv "$file.partial" "$file"
echo "$file ($(du -h "$file" | cut -f1))"

# Rotation: newest first, drop the rest.
ls -1t "$dir"/smsgw-*.dump 2>/dev/null | tail -n +"$((keep + 1))" | xargs -r rm -f
