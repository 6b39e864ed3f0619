#!/usr/bin/env python3
"""Join an edge node to its centre: trade the one-time enrolment token for
the node's credentials and write them where its modem workers read them.

    scripts/edge-join.py --centre https://centre.example --token smsgw_enrol_... --ca centre-ca.pem
    make edge CENTRE=https://centre.example TOKEN=smsgw_enrol_... CA=centre-ca.pem

`--ca` is the certificate (or its CA) the centre presents: the dashboard's
own self-signed one by default (`docker compose exec dashboard cat
/etc/nginx/tls/cert.pem` on the centre). The token is sent only over TLS
verified against it, and the same file verifies the centre's Postgres
(`sslmode=verify-full`) and broker (`MQTT_CA_FILE`) afterwards.

Writes `edge.env` (mode 0600: it holds passwords): the node's name and site,
DATABASE_URL with its own role, the broker's address, and per modem
`MODEM_<k>_ID` / `MODEM_<k>_MQTT_PASSWORD` (docs/deployment.md, "Several
sites"). Then `compose.edge.yml` beside it: a worker per modem, from the
same modem-worker image as the centre's, with the k-th of `--ports` as its
modem (or `--emulator`); compose reads the settings from edge.env, so the
file holds no secret. `--compose-only` writes it again from an existing
edge.env (a modem moved to another port). Standard library only: it runs
before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path


def fail(message: str) -> int:
    print(f"edge-join: {message}", file=sys.stderr)
    return 2


def enrol(centre: str, token: str, ca: Path, timeout: float = 30.0) -> dict:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(
        centre.rstrip("/") + "/api/nodes/enrol",
        data=json.dumps({"token": token}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return json.loads(response.read())


def env_lines(answer: dict, host: str, ca: Path, db_port: int, mqtt_port: int) -> list[str]:
    node, db = answer["node"], answer["database"]
    query = urllib.parse.urlencode({"sslmode": "verify-full", "sslrootcert": str(ca)})
    login = f"{db['user']}:{urllib.parse.quote(db['password'], safe='')}"
    url = f"postgresql+psycopg2://{login}@{host}:{db_port}/{db['name']}"
    lines = [
        f"# Written by scripts/edge-join.py at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}; it holds passwords (0600).",
        f"NODE_NAME={node['name']}",
        f"SITE={node.get('site') or ''}",
        f"DATABASE_URL={url}?{query}",
        f"MQTT_HOST={host}",
        f"MQTT_PORT={mqtt_port}",
        f"MQTT_CA_FILE={ca}",
        # The centre's NODE_UNREACHABLE_SECONDS: how long it waits for a word
        # from a modem before its last will marks it offline.
        f"MQTT_KEEPALIVE={int(answer['broker'].get('keepalive', 30))}",
        f"MODEMS={len(answer['modem_ids'])}",
    ]
    for k, modem_id in enumerate(answer["modem_ids"], start=1):
        lines += [f"MODEM_{k}_ID={modem_id}", f"MODEM_{k}_MQTT_PASSWORD={answer['broker']['users'][modem_id]}"]
    return lines


ROOT = Path(__file__).resolve().parents[1]

COMPOSE_HEAD = """\
# This edge node's modem workers (docs/deployment.md, "Several sites"),
# written by scripts/edge-join.py; not tracked by git. Their settings and
# passwords come from edge.env:
#   docker compose -f compose.edge.yml --env-file edge.env up -d   (make edge does it)
name: smsgw-edge

x-edge-env: &edge-env
  DATABASE_URL: ${{DATABASE_URL:?edge.env has no DATABASE_URL; run make edge}}
  MQTT_HOST: ${{MQTT_HOST}}
  MQTT_PORT: ${{MQTT_PORT}}
  MQTT_CA_FILE: ${{MQTT_CA_FILE}}
  MQTT_KEEPALIVE: ${{MQTT_KEEPALIVE:-30}}
  MQTT_PREFIX: ${{MQTT_PREFIX:-smsgw/}}
  NODE_NAME: ${{NODE_NAME}}
  SITE: ${{SITE}}
  LOG_LEVEL: ${{LOG_LEVEL:-INFO}}
  LOG_JSON: ${{LOG_JSON:-true}}
  TZ: ${{TZ:-UTC}}

x-edge-modem: &edge-modem
  image: ${{SMSGW_IMAGE_PREFIX:-smsgw}}/modem-worker:${{SMSGW_VERSION:-latest}}
  pull_policy: never
  init: true
  restart: unless-stopped
  volumes:
    # The outcome journal: what the modems told the workers while the centre
    # was out of reach, applied when it is back (docs/reliability.md).
    - worker-data:/var/lib/smsgw-worker
    # The centre's certificate, at the path DATABASE_URL and MQTT_CA_FILE name.
    - ${{MQTT_CA_FILE}}:${{MQTT_CA_FILE}}:ro
  logging:
    driver: json-file
    options: {{max-size: "10m", max-file: "3"}}
  deploy:
    resources:
      limits:
        memory: 128m

services:
  # The image, built once for every modem (--profile build); never started itself.
  modem-worker:
    <<: *edge-modem
    build:
      context: {root}
      dockerfile: services/modem-worker/Dockerfile
    pull_policy: build
    profiles: ["build"]
"""

COMPOSE_MODEM = """
  modem-{k}:
    <<: *edge-modem
    environment:
      <<: *edge-env
      MODEM_ID: ${{MODEM_{k}_ID}}
      MQTT_MODEM_WORKER_USERNAME: ${{MODEM_{k}_ID}}
      MQTT_MODEM_WORKER_PASSWORD: ${{MODEM_{k}_MQTT_PASSWORD}}
{device}"""

COMPOSE_TAIL = """
volumes:
  worker-data:
"""


def compose_file(modems: int, ports: list[str], emulator: str | None) -> str:
    """One worker per modem that has a port (or all of them, emulated)."""
    services = []
    for k in range(1, modems + 1):
        if emulator:
            device = f'      MODEM_DEVICE: ""\n      MODEM_EMULATOR: {emulator}\n'
        elif k <= len(ports):
            device = f'      MODEM_DEVICE: /dev/modem\n    devices: ["{ports[k - 1]}:/dev/modem"]\n'
        else:
            continue
        services.append(COMPOSE_MODEM.format(k=k, device=device))
    return COMPOSE_HEAD.format(root=json.dumps(str(ROOT))) + "".join(services) + COMPOSE_TAIL


# What a port may look like in a compose `devices:` entry.
PORT = re.compile(r"/dev/[A-Za-z0-9._/+-]+")


def read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def write_compose(path: Path, modems: int, ports: list[str], emulator: str | None) -> None:
    path.write_text(compose_file(modems, ports, emulator))
    started = modems if emulator else min(modems, len(ports))
    print(f"edge-join: {path}: {started} of {modems} modem worker(s)")
    if started < modems:
        print(
            f"edge-join: modems {started + 1}..{modems} have no port: give every port, in order, with "
            "make edge PORTS='/dev/serial/by-id/... ...' (make probe lists them)",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--centre", help="the centre's dashboard address, https://...")
    parser.add_argument("--token", help="the one-time token from the centre's Edge nodes page")
    parser.add_argument("--ca", type=Path, help="the centre's certificate or its CA (PEM)")
    parser.add_argument("--out", type=Path, default=Path("edge.env"), help="where to write the node's settings")
    parser.add_argument("--db-port", type=int, default=5432, help="the centre's Postgres port")
    parser.add_argument("--mqtt-port", type=int, default=8883, help="the centre's broker TLS port")
    parser.add_argument("--ports", nargs="*", default=[], help="the modems' serial ports, in order (by-id paths)")
    parser.add_argument("--emulator", help="emulated modems instead (a profile name: generic, ...), to try it out")
    parser.add_argument(
        "--compose-only", action="store_true", help="write compose.edge.yml again from an existing edge.env"
    )
    args = parser.parse_args(argv)

    ports = [p for arg in args.ports for p in arg.split()]
    bad = [p for p in ports if not PORT.fullmatch(p)]
    if bad:
        return fail(f"--ports: not a device path: {bad[0]!r} (make probe lists the serial ports)")
    if ports and args.emulator:
        return fail("--ports or --emulator, not both")
    if args.emulator and not re.fullmatch(r"[a-z0-9_-]{1,32}", args.emulator):
        return fail(f"--emulator: not a profile name: {args.emulator!r}")
    compose = args.out.resolve().parent / "compose.edge.yml"
    if args.compose_only:
        if not args.out.is_file():
            return fail(f"{args.out} does not exist: join first (make edge CENTRE=... TOKEN=... CA=...)")
        write_compose(compose, int(read_env(args.out).get("MODEMS", "0")), ports, args.emulator)
        return 0
    if not (args.centre and args.token and args.ca):
        return fail("--centre, --token and --ca are needed to join (or --compose-only)")

    centre = urllib.parse.urlsplit(args.centre)
    if centre.scheme != "https" or not centre.hostname:
        return fail(f"--centre must be an https:// address (the token is a credential): {args.centre!r}")
    if not args.ca.is_file():
        return fail(f"--ca {args.ca} is not a file")
    if args.out.exists():
        return fail(
            f"{args.out} exists: this node is enrolled already (ask for a new token to re-key it, then move it away)"
        )
    # Kept beside the settings, so that they stay valid when the file it came from moves.
    ca = args.out.resolve().parent / "centre-ca.pem"
    try:
        answer = enrol(args.centre, args.token, args.ca)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error")
        except ValueError:
            detail = exc.reason
        return fail(f"the centre refused the token ({exc.code}): {detail}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            return fail(
                f"{args.centre} is not the centre in --ca {args.ca}; nothing was sent ({reason.verify_message})"
            )
        return fail(f"cannot reach {args.centre}: {reason}")
    if ca != args.ca.resolve():
        shutil.copyfile(args.ca, ca)
    lines = env_lines(answer, centre.hostname, ca, args.db_port, args.mqtt_port)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(
        f"edge-join: node {answer['node']['name']} enrolled with {len(answer['modem_ids'])} modem(s): "
        f"{', '.join(answer['modem_ids'])}; settings in {args.out}"
    )
    write_compose(compose, len(answer["modem_ids"]), ports, args.emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
