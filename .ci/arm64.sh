#!/usr/bin/env bash
# CI tier: the stack on arm64, the Raspberry Pi's architecture, emulated with
# qemu-user on this amd64 machine.
#
#  1. the container engine (.ci/engine.sh) and qemu: qemu-user-static and
#     binfmt-support, binfmt_misc mounted, the aarch64 handler enabled with the
#     F flag (the interpreter is opened at registration, so it also runs
#     binaries inside containers, whose root has no qemu);
#  2. arm64 stand-in base images: `.ci/images/build.sh --arch arm64`
#     (debootstrap --arch=arm64), tagged smsgw-ci-arm64/<official tag> with
#     platform linux/arm64, next to the amd64 ones under the official tags;
#  3. every image docker-compose.yml builds, from its own Dockerfile with the
#     repository root as context, `docker build --platform linux/arm64`
#     (classic builder), tagged through the compose file's own
#     SMSGW_IMAGE_PREFIX=smsgw-ci-arm64. One image store holds one image per
#     tag, so the Dockerfile is built from a copy whose `FROM <official tag>`
#     lines name the arm64 stand-ins; nothing else in it changes;
#  4. the demo profile (two emulated modems) up under its own project
#     (smsgw-arm64), nginx on 127.0.0.1 only, with a generated override that
#     points the official images at their arm64 stand-ins, pins every service
#     to linux/arm64, triples the memory limits (qemu's own overhead; the
#     stack tier checks the real ones) and gives health checks time for an
#     emulated start-up; then tests/stack/test_arm64_smoke.py
#     (pytest -m arm64): every container reports `uname -m` = aarch64, login,
#     an SMS sent and `delivered` on an emulated modem;
#  5. a summary line: arm64 image sizes, smoke result, seconds; `down -v`.
#
# Time (this machine, 2 cores shared with other jobs, load 5-17): cold
# (nothing cached) 20-30 min, of which the arm64 stand-in bases take 11-12
# and our four images 5-14; warm (bases and dependency layers cached) 3-5 min,
# nearly all of it the emulated start-up. With the ~15 min of the rest, CI
# stays within its 90 min, so .ci/run runs this tier every time.
#
# SMSGW_CI_ARM64 chooses: always (the default), never, or auto: run only when
# what decides the arm64 images changed since the last successful arm64 run
# recorded in the cache ($CACHE/arm64/last-success): the Dockerfiles, lock
# and requirement files, the pyproject files' dependencies,
# docker-compose.yml, this script, .ci/images/ and the smoke test (a fresh
# machine has no record, so it runs there). Use auto where emulation is slower.
#
# Run as root (binfmt_misc, dockerd). Caches stay on this machine between runs:
# the arm64 images and their layers in dockerd, the compose binary and the
# record above under $SMSGW_CI_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE=${SMSGW_CI_CACHE:-/var/tmp/smsgw-ci}
MODE=${SMSGW_CI_ARM64:-always}
PROJECT=smsgw-arm64
ARCH=arm64
PLATFORM=linux/arm64
PREFIX=smsgw-ci-arm64          # stand-ins: $PREFIX/<official tag>; ours: $PREFIX/<service>
STATE="$CACHE/arm64"
mkdir -p "$STATE"
started_at=$SECONDS

log() { printf '[arm64 %4ss] %s\n' "$((SECONDS - started_at))" "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "arm64 tier: must run as root (binfmt_misc, dockerd)" >&2
  exit 1
fi

# --- 0. does it need to run? --------------------------------------------------
# What the arm64 images and this tier depend on, by content.
fingerprint() {
  {
    git ls-files -z -- '*Dockerfile*' '*.dockerignore' '*requirements*.txt' '*requirements*.in' \
        '*.lock' '*lock*.txt' '*pylock*.toml' '*constraints*.txt' docker-compose.yml .ci/arm64.sh .ci/images \
        tests/stack/test_arm64_smoke.py \
      | sort -z | xargs -0 -r sha256sum
    # Only the dependency parts of the pyproject files: code moves do not count.
    git ls-files -z -- '*pyproject.toml' | sort -z | xargs -0 -r python3 -c '
import json, sys, tomllib
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    project = data.get("project", {})
    print(path, json.dumps([data.get("build-system", {}).get("requires"),
                            project.get("dependencies"), project.get("optional-dependencies")],
                           sort_keys=True))
'
  } | sha256sum | cut -c1-16
}
current="$(fingerprint)"
last="$(cat "$STATE/last-success" 2>/dev/null | awk '{print $1}' || true)"
case "$MODE" in
  never)
    log "SMSGW_CI_ARM64=never: arm64 tier not run"
    exit 0 ;;
  auto)
    if [ "$current" = "$last" ]; then
      echo "arm64 tier: not run: Dockerfiles, lock/requirement files and dependencies unchanged since the last successful arm64 run ($(cat "$STATE/last-success")); SMSGW_CI_ARM64=always forces it"
      exit 0
    fi ;;
  always) ;;
  *) echo "arm64 tier: SMSGW_CI_ARM64 must be auto, always or never" >&2; exit 2 ;;
esac

# --- 1. engine and qemu -------------------------------------------------------
# shellcheck source=.ci/engine.sh
. .ci/engine.sh

if [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null; then
  log "installing qemu-user-static and binfmt-support"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-user-static binfmt-support >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
handler=/proc/sys/fs/binfmt_misc/qemu-aarch64
if [ ! -e "$handler" ] || ! grep -qx enabled "$handler" || ! grep -q '^flags:.*F' "$handler"; then
  [ -e "$handler" ] && echo -1 >"$handler"          # re-register with F
  update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
if ! grep -qx enabled "$handler" 2>/dev/null || ! grep -q '^flags:.*F' "$handler"; then
  echo "arm64 tier: no enabled aarch64 binfmt handler with the F flag:" >&2
  cat "$handler" >&2 2>/dev/null || true
  exit 1
fi
log "binfmt: qemu-aarch64 $(awk '/^flags:/ {print "flags " $2}' "$handler"), $(qemu-aarch64-static --version | head -n 1)"

run_dir="$(mktemp -d -p "$CACHE")"
env_file="$run_dir/stack.env"
override="$run_dir/arm64.override.yml"
compose() { docker compose -p "$PROJECT" --env-file "$env_file" -f docker-compose.yml -f "$override" "$@"; }
smoke="not run"
timings=()

cleanup() {
  local rc=$?
  if [ -s "$override" ]; then
    if [ $rc -ne 0 ]; then
      compose --profile demo ps -a >&2 || true
      compose --profile demo logs --no-color --tail 60 >&2 || true
    fi
    log "docker compose down -v"
    compose --profile demo down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  rm -rf "$run_dir"
  exit $rc
}
trap cleanup EXIT

phase_start=$SECONDS
phase() { timings+=("$1 $((SECONDS - phase_start))s"); phase_start=$SECONDS; }
phase setup

# --- 2. arm64 stand-in base images --------------------------------------------
log "arm64 stand-in base images"
.ci/images/build.sh --arch "$ARCH"
phase bases

# --- 3. our images, for linux/arm64 -------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
scripts/setup-secrets.sh "$env_file" >/dev/null
http_port="$(free_port)"
https_port="$(free_port)"
cat >>"$env_file" <<EOF
SMSGW_IMAGE_PREFIX=$PREFIX
DASHBOARD_BIND=127.0.0.1
DASHBOARD_HTTP_PORT=$http_port
DASHBOARD_HTTPS_PORT=$https_port
EOF

# The compose file as a user runs it, resolved: which services build which
# Dockerfile into which image, which ones run an official image.
# --profile build: the build-only service that makes the one modem-worker image.
docker compose -p "$PROJECT" --env-file "$env_file" --profile demo --profile build config --format json >"$run_dir/config.json"

# Writes the override and prints "image<TAB>context<TAB>dockerfile" per image to build.
python3 - "$run_dir/config.json" "$override" "$PREFIX" "$PLATFORM" >"$run_dir/builds.tsv" <<'PY'
import json, subprocess, sys
config_path, override_path, prefix, platform = sys.argv[1:]
services = json.load(open(config_path))["services"]
def local(tag):
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0
lines = ["# Generated by .ci/arm64.sh: CI only, never for a Pi (which pulls the official", "# images for its own platform).", "services:"]
# Images a service of ours builds; a service that only names one of them
# (every modem worker runs the one image) needs no stand-in.
builds = {svc["image"]: (svc["build"]["context"], svc["build"].get("dockerfile", "Dockerfile"))
          for svc in services.values() if "build" in svc}
for name, svc in sorted(services.items()):
    lines.append(f"  {name}:")
    lines.append(f"    platform: {platform}")
    lines.append("    pull_policy: never")
    # qemu-user adds its own memory to every process (the translator and its
    # code cache): about 2-3 times a process's native RSS. The limits are the
    # Pi's; the stack tier checks them natively. Here they only must not kill.
    # Start-up (imports, migrations) is 10-30 times slower emulated on a busy
    # machine: a check that fails while the service still starts must not
    # count, and one `python -c` may take longer than 5 s. The test is kept
    # (an empty one inherits the image's).
    lines.append("    healthcheck: {timeout: 30s, start_period: 600s}")
    limit = svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
    if limit:
        lines.append(f"    deploy: {{resources: {{limits: {{memory: \"{max(int(limit) * 3, 256 << 20) >> 20}m\"}}}}}}")
    if svc["image"] not in builds:
        standin = f"{prefix}/{svc['image']}"
        if not local(standin):
            sys.exit(f"arm64 tier: service {name} runs {svc['image']}, which has no arm64 stand-in ({standin}); add one under .ci/images/")
        lines.append(f"    image: {standin}")
open(override_path, "w").write("\n".join(lines) + "\n")
for image, (context, dockerfile) in sorted(builds.items()):
    print(f"{image}\t{context}\t{dockerfile}")
PY

# The Dockerfile's FROM lines that name an official image, pointed at its arm64
# stand-in (stage names and everything else untouched).
retarget_from() {  # DOCKERFILE OUT
  python3 - "$1" "$2" "$PREFIX" <<'PY'
import re, subprocess, sys
src, out, prefix = sys.argv[1:]
stages, result = set(), []
for line in open(src).read().splitlines(keepends=True):
    m = re.match(r"(\s*FROM\s+(?:--platform=\S+\s+)?)(\S+)(.*)$", line, re.I | re.S)
    if m:
        head, ref, tail = m.groups()
        alias = re.search(r"\bAS\s+(\S+)", tail, re.I)
        if ref not in stages and "$" not in ref:
            standin = f"{prefix}/{ref}"
            if subprocess.run(["docker", "image", "inspect", standin], capture_output=True).returncode:
                sys.exit(f"arm64 tier: {src} starts FROM {ref}, which has no arm64 stand-in ({standin}); add one under .ci/images/")
            line = head + standin + tail
        if alias:
            stages.add(alias.group(1))
    result.append(line)
open(out, "w").write("".join(result))
PY
}

while IFS=$'\t' read -r image context dockerfile; do
  case "$dockerfile" in /*) ;; *) dockerfile="$context/$dockerfile" ;; esac
  name="${image#"$PREFIX"/}"; name="${name%%:*}"
  retarget_from "$dockerfile" "$run_dir/$name.Dockerfile"
  log "building $image for $PLATFORM ($(realpath --relative-to="$ROOT" "$dockerfile"), context $(realpath --relative-to="$ROOT" "$context")/)"
  if ! docker build -q --platform "$PLATFORM" -f "$run_dir/$name.Dockerfile" -t "$image" "$context" \
      >"$STATE/build-$name.log" 2>&1; then
    tail -n 60 "$STATE/build-$name.log" >&2
    exit 1
  fi
done <"$run_dir/builds.tsv"
phase images

# --- 4. the stack on arm64 and the smoke test ---------------------------------
docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null
docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker volume rm >/dev/null
log "docker compose --profile demo up --wait (project $PROJECT, https on 127.0.0.1:$https_port)"
if ! compose --profile demo up -d --no-build --wait --wait-timeout 600 >"$run_dir/up.log" 2>&1; then
  grep -v '^ *Container ' "$run_dir/up.log" | tail -n 20 >&2
  exit 1
fi
phase up

pytest="$ROOT/.venv/bin/pytest"
if [ ! -x "$pytest" ]; then
  # On its own (not after `make test`, as in .ci/run): the project's own test setup.
  log "no .venv: setting up the test environment (scripts/test.sh)"
  scripts/test.sh --collect-only -q tests/stack/test_arm64_smoke.py >/dev/null
fi
log "smoke test (tests/stack/test_arm64_smoke.py, pytest -m arm64)"
set +e
SMSGW_STACK_PROJECT="$PROJECT" SMSGW_STACK_ENV_FILE="$env_file" \
COMPOSE_FILE="docker-compose.yml:$override" \
SMSGW_STACK_HTTPS_PORT="$https_port" SMSGW_STACK_HTTP_PORT="$http_port" \
  timeout 900 "$pytest" tests/stack/test_arm64_smoke.py -m arm64 -v -s -p no:cacheprovider
tests_rc=$?
set -e
[ $tests_rc -eq 0 ] && smoke=passed || smoke="FAILED (pytest exit $tests_rc)"
phase smoke

# --- 5. summary ---------------------------------------------------------------
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1000 / 1000 }'; }
sizes=()
echo
echo "== arm64 images"
while IFS=$'\t' read -r image _; do
  read -r arch size < <(docker image inspect -f '{{.Architecture}} {{.Size}}' "$image")
  printf '   %-42s %-6s %4s MB\n' "$image" "$arch" "$(mb "$size")"
  name="${image#"$PREFIX"/}"
  sizes+=("${name%:latest} $(mb "$size") MB")
done <"$run_dir/builds.tsv"
for tag in python:3.11-slim-bookworm postgres:16-alpine redis:7-alpine eclipse-mosquitto:2 nginx:1.27-bookworm; do
  docker image inspect "$PREFIX/$tag" >/dev/null 2>&1 || continue
  read -r arch size < <(docker image inspect -f '{{.Architecture}} {{.Size}}' "$PREFIX/$tag")
  printf '   %-42s %-6s %4s MB (stand-in)\n' "$PREFIX/$tag" "$arch" "$(mb "$size")"
done
total=$((SECONDS - started_at))
join() { local out="" item; for item in "$@"; do out="${out:+$out, }$item"; done; printf '%s' "$out"; }
echo
echo "arm64 tier: smoke $smoke; images (linux/arm64): $(join "${sizes[@]}"); ${total}s ($(join "${timings[@]}"))"
if [ $tests_rc -ne 0 ]; then
  exit 1
fi
printf '%s %s %s\n' "$current" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" >"$STATE/last-success"
