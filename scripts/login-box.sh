#!/usr/bin/env bash
# The box `make up` ends with: where the gateway is and how to log in.
#   scripts/login-box.sh [1]    # 1: first start, show the password too
set -euo pipefail
cd "$(dirname "$0")/.."
env_file="${SMSGW_ENV_FILE:-.env}"
value() { sed -n "s/^$1=//p" "$env_file" | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/'; }
port="$(value DASHBOARD_HTTPS_PORT)"
[ "$port" = 443 ] && port=""
host="$(value TLS_SELF_SIGNED_CN)"
host="${host:-$(hostname -f 2>/dev/null || hostname)}"
admin_user="$(value ADMIN_USERNAME)"
lines=(
  "The gateway is up:  https://$host${port:+:$port}/"
  "Admin username:     ${admin_user:-admin}"
)
if [ "${1:-}" = 1 ]; then
  lines+=("Password:           $(value ADMIN_PASSWORD)   (first start: shown once)")
fi
lines+=(
  "The first password is kept in $env_file (ADMIN_PASSWORD); it is used only"
  "while the database has no user. Change it on the dashboard's Account page."
  "Certificate: self-signed until you install yours (docs/deployment.md)."
)
width=0
for l in "${lines[@]}"; do [ ${#l} -gt $width ] && width=${#l}; done
border="$(printf '%*s' $((width + 2)) '' | tr ' ' '-')"
echo
echo "+$border+"
for l in "${lines[@]}"; do printf '| %-*s |\n' "$width" "$l"; done
echo "+$border+"
