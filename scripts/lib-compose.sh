# Sourced by the operator scripts: one way to call compose on this stack.
#   SMSGW_ENV_FILE     env file (default .env)
#   SMSGW_MODEMS_FILE  the generated modems file (default compose.modems.yml)
#   COMPOSE_PROJECT_NAME  as compose itself reads it (default: smsgw)
# shellcheck shell=bash
env_file="${SMSGW_ENV_FILE:-.env}"
modems_file="${SMSGW_MODEMS_FILE:-compose.modems.yml}"

# The stack's compose files, ":"-separated: the base, the centre's when this
# stack is the centre of several sites (make centre), your modems.
compose_files() {
  local files=docker-compose.yml
  grep -qx 'SMSGW_CENTRE=1' "$env_file" 2>/dev/null && files="$files:compose.centre.yml"
  [ -f "$modems_file" ] && files="$files:$modems_file"
  printf '%s\n' "$files"
}

compose() {
  local files=() f list
  IFS=: read -ra list <<<"$(compose_files)"
  for f in "${list[@]}"; do files+=(-f "$f"); done
  docker compose "${files[@]}" --env-file "$env_file" "$@"
}

# Plain `docker compose ...` in this directory sees the same files: the env
# file's COMPOSE_FILE, unless you set one of your own there.
record_compose_files() {
  [ "$modems_file" = compose.modems.yml ] || return 0
  local line
  line="COMPOSE_FILE=$(compose_files)"
  if ! grep -q '^COMPOSE_FILE=' "$env_file" 2>/dev/null; then
    printf '%s\n' "$line" >>"$env_file"
  elif grep -qE '^COMPOSE_FILE=docker-compose\.yml(:compose\.centre\.yml)?(:compose\.modems\.yml)?$' "$env_file"; then
    sed -i "s|^COMPOSE_FILE=.*|$line|" "$env_file"
  fi
}

# The modem ids recorded in the modems file, one per line.
modem_ids() {
  [ -f "$modems_file" ] || return 0
  sed -n 's/^[[:space:]]*MODEM_ID:[[:space:]]*"\{0,1\}\([A-Za-z0-9_-]*\)"\{0,1\}[[:space:]]*$/\1/p' "$modems_file"
}
