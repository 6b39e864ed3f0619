"""Load test of the API as deployed: gunicorn, 2 gevent workers, real Postgres
and Mosquitto. Drives it with wrk (POST /api/sms and GET /healthz as the
ceiling, 16 and 64 connections), then measures one page of
GET /api/sms/outbox with 1,000,000 messages in the table.

    .venv/bin/python bench/api_load.py [--duration 20] [--rows 1000000]

Uses a database of its own (created and dropped), 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import requests
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from shared_fixtures import create_database, drop_database  # noqa: E402  (scratch databases as the tests make them)

POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "%(key)s"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"recipient": "+4915%%09d", "message": "Load test message %%d"}', n %% 1000000000, n)
  return wrk.format(nil, nil, nil, body)
end
"""
GET_LUA = """
wrk.headers["X-API-Key"] = "%(key)s"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str) -> str:
    """A user with an API key and two SIMs in online modems; returns the key."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    from werkzeug.security import generate_password_hash

    from smsgw_api.core.security import new_api_key
    from smsgw_common.models import ApiKey, Modem, SimCard, User

    key, prefix, digest = new_api_key()
    engine = create_engine(url)
    with Session(engine) as s:
        user = User(username="bench", password_hash=generate_password_hash(secrets.token_hex(16)), role="user")
        s.add(user)
        for i in (1, 2):
            s.add(Modem(id=f"bench{i}", online=True))
        s.flush()
        for i in (1, 2):
            s.add(SimCard(number=f"+4917000000{i}", status="active", modem_id=f"bench{i}"))
        s.add(ApiKey(user_id=user.id, name="bench", prefix=prefix, key_hash=digest))
        s.commit()
    engine.dispose()
    return key


def parse_wrk(out: str) -> dict:
    def latency(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": rps, "p50_ms": latency("50"), "p99_ms": latency("99"), "errors": errors, "requests": total}


def wrk(url: str, script: str, connections: int, duration: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                path,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(path)
    return parse_wrk(out)


def api_env(url: str) -> dict:
    """The API's environment for a benchmark: its scratch database, the local
    broker under a prefix of its own, Redis database 15."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "REDIS_"))}
    env.update(
        DATABASE_URL=url,
        MQTT_HOST="127.0.0.1",
        MQTT_PORT="1883",
        MQTT_PREFIX=f"smsgw-bench-{os.getpid()}/",
        REDIS_URL="redis://127.0.0.1:6379/15",
        JWT_SECRET=secrets.token_urlsafe(48),
    )
    return env


def start_api(env: dict, port: int, log_file=None, workers: int = 2) -> subprocess.Popen:
    """With `log_file` (an open file) the API logs as in production (INFO,
    JSON, one access line per request) into it; without, only warnings."""
    env = {
        **env,
        "API_PORT": str(port),
        "API_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "LOG_LEVEL": "INFO" if log_file is not None else "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"],
        env=env,
        stdout=log_file if log_file is not None else subprocess.DEVNULL,  # the JSON log lines
        stderr=log_file if log_file is not None else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited: {proc.stderr.read()[-2000:] if proc.stderr else 'see its log'}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("gunicorn did not become ready in 30 s")


def bulk_insert(url: str, rows: int) -> float:
    """`rows` messages spread over the last 30 days, most of them delivered."""
    started = time.monotonic()
    conn = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    conn.autocommit = True
    with conn.cursor() as cur:
        # The load phase left its messages queued (no modem worker runs
        # here); mark them sent so that the listing is measured on a quiet
        # gateway, not against a sweeper chewing through a backlog.
        cur.execute("UPDATE messages SET status = 'delivered', delivered_at = now() WHERE status = 'queued'")
        cur.execute("SELECT id FROM sim_cards ORDER BY id LIMIT 1")
        sim = cur.fetchone()[0]
        cur.execute(
            """
            INSERT INTO messages (direction, sender, recipient, message, status, encoding, segments,
                                  sim_card_id, sender_sim, timestamp, queued_at, updated_at)
            SELECT CASE WHEN g %% 10 = 0 THEN 'inbound' ELSE 'outbound' END,
                   '+49170000001', '+4915' || lpad((g %% 100000000)::text, 9, '0'),
                   'bulk message number ' || g,
                   CASE WHEN g %% 10 = 0 THEN 'received' WHEN g %% 7 = 0 THEN 'failed' ELSE 'delivered' END,
                   'GSM-7', 1, %s, '+49170000001',
                   now() - (%s - g) * interval '2 seconds', now(), now()
            FROM generate_series(1, %s) AS g
            """,
            (sim, rows, rows),
        )
        # A million messages that arrived over weeks were each read once by the
        # leader's cursors (webhooks, opt-out keywords) as they came; move the
        # cursors past them instead of measuring a catch-up of all of them at once.
        cur.execute(
            "UPDATE event_cursors SET last_id = (SELECT max(id) FROM messages) WHERE name = 'optouts.inbound_messages'"
        )
        cur.execute("VACUUM ANALYZE messages")
    conn.close()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--skip-send", action="store_true", help="only the listing measurement")
    args = parser.parse_args()

    name = f"smsgw_bench_{os.getpid()}"
    url = create_database(name)
    proc = None
    results: dict = {"post": {}, "ceiling": {}}
    try:
        from smsgw_api.migrate import upgrade

        upgrade(url)
        key = seed(url)
        env = api_env(url)
        port = free_port()
        proc = start_api(env, port)
        base = f"http://127.0.0.1:{port}"

        for c in [] if args.skip_send else [int(x) for x in args.connections.split(",")]:
            results["ceiling"][c] = wrk(f"{base}/healthz", "", c, args.duration)
            results["post"][c] = wrk(f"{base}/api/sms", POST_LUA % {"key": key}, c, args.duration)
            post, ceil = results["post"][c], results["ceiling"][c]
            print(
                f"{c:3d} conns  POST /api/sms: {post['rps']:8.0f} req/s  p50 {post['p50_ms']:6.1f} ms  "
                f"p99 {post['p99_ms']:6.1f} ms  errors {post['errors']}  | /healthz: {ceil['rps']:8.0f} req/s  "
                f"p99 {ceil['p99_ms']:6.1f} ms  errors {ceil['errors']}  | ratio {post['rps'] / ceil['rps']:.2f}",
                flush=True,
            )

        with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False)) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM messages WHERE status = 'queued'")
                queued = cur.fetchone()[0]
        print(f"messages accepted and committed as queued during the run: {queued}", flush=True)

        took = bulk_insert(url, args.rows)
        with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False)) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM messages")
                total = cur.fetchone()[0]
        print(f"bulk-inserted {args.rows} messages in {took:.1f} s; {total} in the table", flush=True)
        results["outbox"] = {}
        for label, path in (
            ("page 1", "/api/sms/outbox?per_page=50"),
            ("page 1, status=delivered", "/api/sms/outbox?per_page=50&status=delivered"),
            ("keyset deep", "/api/sms/outbox?per_page=50&before_id=200000"),
            ("inbox page 1", "/api/sms/inbox?per_page=50"),
        ):
            r = wrk(f"{base}{path}", GET_LUA % {"key": key}, 4, min(args.duration, 10))
            results["outbox"][label] = r
            print(
                f"GET {path}: {r['rps']:6.0f} req/s  p50 {r['p50_ms']:5.1f} ms  p99 {r['p99_ms']:5.1f} ms  "
                f"errors {r['errors']}",
                flush=True,
            )
        size = len(requests.get(f"{base}/api/sms/outbox?per_page=50", headers={"X-API-Key": key}).content)
        print(f"one outbox page: {size} bytes", flush=True)
        print(json.dumps(results, indent=1, default=str))
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        drop_database(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
