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
sites"). Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
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
        f"MODEMS={len(answer['modem_ids'])}",
    ]
    for k, modem_id in enumerate(answer["modem_ids"], start=1):
        lines += [f"MODEM_{k}_ID={modem_id}", f"MODEM_{k}_MQTT_PASSWORD={answer['broker']['users'][modem_id]}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--centre", required=True, help="the centre's dashboard address, https://...")
    parser.add_argument("--token", required=True, help="the one-time token from the centre's Edge nodes page")
    parser.add_argument("--ca", required=True, type=Path, help="the centre's certificate or its CA (PEM)")
    parser.add_argument("--out", type=Path, default=Path("edge.env"), help="where to write the node's settings")
    parser.add_argument("--db-port", type=int, default=5432, help="the centre's Postgres port")
    parser.add_argument("--mqtt-port", type=int, default=8883, help="the centre's broker TLS port")
    args = parser.parse_args(argv)

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
