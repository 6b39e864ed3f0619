#!/usr/bin/env bash
# Follow the stack's logs (every service, or the ones named), modems included.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-compose.sh
compose --profile '*' logs -f --tail 100 "$@"
