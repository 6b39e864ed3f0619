# Sourced by the operator scripts: one way to call compose on this stack.
#   SMSGW_ENV_FILE     env file (default .env)
#   SMSGW_MODEMS_FILE  the generated modems file (default compose.modems.yml)
#   COMPOSE_PROJECT_NAME  as compose itself reads it (default: smsgw)
# shellcheck shell=bash
env_file="${SMSGW_ENV_FILE:-.env}"
modems_file="${SMSGW_MODEMS_FILE:-compose.modems.yml}"

compose() {
  local files=(-f docker-compose.yml)
  [ -f "$modems_file" ] && files+=(-f "$modems_file")
  docker compose "${files[@]}" --env-file "$env_file" "$@"
}

# The modem ids recorded in the modems file, one per line.
modem_ids() {
  [ -f "$modems_file" ] || return 0
  sed -n 's/^[[:space:]]*MODEM_ID:[[:space:]]*"\{0,1\}\([A-Za-z0-9_-]*\)"\{0,1\}[[:space:]]*$/\1/p' "$modems_file"
}
