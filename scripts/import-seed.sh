#!/usr/bin/env bash
# Import the seed's SQLite database (docs/migrating-from-the-seed.md):
#   scripts/import-seed.sh PATH/sms_gateway.db [--dry-run]
#   make import-seed FILE=PATH/sms_gateway.db [ARGS=--dry-run]
# With the Compose stack running, the import runs inside the api container
# (its database settings and secrets are there); the file is streamed in as a
# copy, so the seed's own file is only ever read. Without the stack it runs
# from .venv against DATABASE_URL (or POSTGRES_*), e.g. `make native`'s database.
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-}"
if [ -z "$file" ] || [ ! -f "$file" ]; then
  echo "usage: scripts/import-seed.sh SEED_DB [--dry-run]   (make import-seed FILE=.../sms_gateway.db)" >&2
  exit 2
fi
shift

if command -v docker >/dev/null 2>&1 && docker compose ps --services --status running 2>/dev/null | grep -qx api; then
  copy="/tmp/seed-import-$$.db"
  docker compose exec -T api sh -c "cat > '$copy'" <"$file"
  status=0
  docker compose exec -T -e LOG_JSON=false api python -m smsgw_api import-seed "$copy" "$@" || status=$?
  docker compose exec -T api rm -f "$copy"
  exit $status
fi

PY=.venv/bin/python
[ -x "$PY" ] || { echo "the stack is not running and there is no .venv: start it (make up) or run make test once" >&2; exit 1; }
LOG_JSON=false exec "$PY" -m smsgw_api import-seed "$file" "$@"
