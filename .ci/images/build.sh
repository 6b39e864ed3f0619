#!/usr/bin/env bash
# CI only: build stand-ins for the official base images the Dockerfiles and
# docker-compose.yml name, because no image registry is reachable from CI.
# A Debian bookworm rootfs (debootstrap, from the mirror apt already uses) is
# imported once; each stand-in installs Debian's packages on top of it and
# mimics its official image's env vars, ports, paths, entrypoint and tools.
# Images are rebuilt only when their directory (or the base) changed.
#
#   build.sh              this machine's architecture, under the official tags
#   build.sh --arch ARCH  another Debian architecture (e.g. arm64, run through
#                         qemu-user binfmt, see .ci/arm64.sh) under
#                         smsgw-ci-ARCH/<official tag>, with the image platform
#                         set to linux/ARCH, so they never replace the native ones
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
NATIVE_ARCH="$(dpkg --print-architecture)"
ARCH="$NATIVE_ARCH"
if [ "${1:-}" = --arch ]; then
  ARCH="${2:?--arch needs a Debian architecture}"
  shift 2
fi
if [ "$ARCH" = "$NATIVE_ARCH" ]; then
  TAG_PREFIX=""
  BASE_TAG=smsgw-ci/debian:bookworm
  platform_args=()
else
  TAG_PREFIX="smsgw-ci-$ARCH/"
  BASE_TAG="${TAG_PREFIX}debian:bookworm"
  platform_args=(--platform "linux/$ARCH")
fi
CACHE=${SMSGW_CI_CACHE:-/var/tmp/smsgw-ci}
mkdir -p "$CACHE"

log() { printf '[images %s] %s\n' "$ARCH" "$*" >&2; }

# The Debian mirrors apt is configured with on this machine (bookworm suites only).
apt_sources() {
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
    | awk '$2 ~ /^bookworm(-updates|-security)?$/' | sort -u \
    | awk '{printf "deb %s %s %s\n", $1, $2, $3}'
}

build_base() {
  if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    log "$BASE_TAG exists; skipping debootstrap"
    return
  fi
  local sources mirror rootfs
  sources="$(apt_sources)"
  mirror="$(printf '%s\n' "$sources" | awk '$3 == "bookworm" {print $2; exit}')"
  [ -n "$mirror" ] || { log "no Debian bookworm mirror in apt's sources"; exit 1; }
  rootfs="$(mktemp -d -p "$CACHE")"
  trap 'rm -rf "$rootfs"' RETURN
  log "debootstrap --arch=$ARCH bookworm from $mirror"
  debootstrap --arch="$ARCH" --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" \
      >"$CACHE/debootstrap-$ARCH.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap-$ARCH.log" >&2; exit 1; }
  printf '%s\n' "$sources" >"$rootfs/etc/apt/sources.list"
  # What the official debian:bookworm-slim image does to stay small.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Acquire::GzipIndexes "true";
Acquire::Languages "none";
CONF
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-excludes" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
CONF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  if [ -z "$TAG_PREFIX" ]; then
    tar -C "$rootfs" -c . | docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
  else
    load_foreign "$rootfs"
  fi
  log "imported $BASE_TAG ($(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$BASE_TAG"))"
}

# `docker import --platform` leaves the architecture at the engine's own (20.10):
# a foreign rootfs is loaded as a one-layer image archive whose config says
# linux/$ARCH, so that `docker build --platform linux/$ARCH` finds it locally.
load_foreign() {  # ROOTFS
  local archive
  archive="$(mktemp -d -p "$CACHE")"
  tar -C "$1" -c . >"$archive/layer.tar"
  python3 - "$archive" "$BASE_TAG" "$ARCH" <<'PY'
import datetime, hashlib, json, sys
archive, tag, arch = sys.argv[1:]
digest = hashlib.sha256()
with open(f"{archive}/layer.tar", "rb") as layer:
    for chunk in iter(lambda: layer.read(1 << 20), b""):
        digest.update(chunk)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
config = json.dumps({
    "architecture": arch, "os": "linux", "created": now,
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + digest.hexdigest()]},
    "history": [{"created": now, "created_by": f"debootstrap --arch={arch} --variant=minbase bookworm"}],
}).encode()
name = hashlib.sha256(config).hexdigest() + ".json"
with open(f"{archive}/{name}", "wb") as f:
    f.write(config)
with open(f"{archive}/manifest.json", "w") as f:
    json.dump([{"Config": name, "RepoTags": [tag], "Layers": ["layer.tar"]}], f)
PY
  tar -C "$archive" -c . | docker load -q >/dev/null
  rm -rf "$archive"
}

# build_standin DIR TAG... : rebuild when the directory's content or the base
# changed. TAGs are the official ones; TAG_PREFIX is put in front of each.
build_standin() {
  local dir="$here/$1"; shift
  set -- "${@/#/$TAG_PREFIX}"
  local ctx hash
  ctx="$(mktemp -d)"
  cp -a "$dir/." "$ctx/"
  if [ "$(basename "$dir")" = python ]; then
    # pip inside image builds must trust this machine's CA bundle and use its
    # index settings; they live in the stand-in, never in the Dockerfiles.
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/ci-ca-bundle.crt"
    {
      echo "[global]"
      echo "cert = /etc/ssl/certs/ci-ca-bundle.crt"
      echo "timeout = 120"
      local key value
      while IFS='=' read -r key value; do
        value="${value#\'}"; value="${value%\'}"
        case "$key" in
          *.index-url) echo "index-url = $value" ;;
          *.extra-index-url)
            # Only indexes reachable over the network; local file:// ones are not in the image.
            value="$(printf '%s\n' $value | grep -E '^https?://' | tr '\n' ' ' || true)"
            [ -n "${value// /}" ] && echo "extra-index-url = $value" ;;
        esac
      done < <(python3 -m pip config list 2>/dev/null || true)
    } >"$ctx/pip.conf"
  fi
  hash="$( (docker image inspect -f '{{.Id}}' "$BASE_TAG"; cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)"
  if [ "$(docker image inspect -f '{{index .Config.Labels "smsgw.ci.hash"}}' "$1" 2>/dev/null || true)" = "$hash" ]; then
    log "$* up to date"
    rm -rf "$ctx"
    return
  fi
  local tags=() buildlog="$CACHE/build-$(basename "$dir")-$ARCH.log"
  for t in "$@"; do tags+=(-t "$t"); done
  log "building stand-in $*"
  # The classic builder (no buildx here) prints a deprecation notice: keep the
  # output for a failure only.
  if ! docker build -q "${platform_args[@]}" --build-arg "BASE=$BASE_TAG" --label "smsgw.ci.hash=$hash" \
      "${tags[@]}" "$ctx" >"$buildlog" 2>&1; then
    tail -n 40 "$buildlog" >&2
    rm -rf "$ctx"
    exit 1
  fi
  rm -rf "$ctx"
}

build_base
# Tags exactly as the Dockerfiles and docker-compose.yml spell them.
build_standin python python:3.11-slim-bookworm
build_standin postgres postgres:16-alpine
build_standin mosquitto eclipse-mosquitto:2
build_standin redis redis:7-alpine
build_standin nginx nginx:1.27-bookworm
