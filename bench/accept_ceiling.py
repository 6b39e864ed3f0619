"""The accept path against its ceiling, in one run: POST /api/sms of the
gateway (gunicorn + gevent as deployed, real Postgres, Redis and Mosquitto,
two online SIMs) and of a bare Flask route that parses the same JSON
(bench/bare_flask.py) on the same gunicorn settings, measured interleaved in
slices (bare, gateway, bare, gateway ...) so that both see the same machine.

    .venv/bin/python bench/accept_ceiling.py [--duration 4] [--rounds 2] [--connections 1,16,64]
                                             [--before DIR]

Distinct recipients (a new number per request) and identical ones (one
number), at each connection count, each target for --rounds slices of
--duration seconds. Prints requests/s (all slices), p50 (median of the
slices) and p99 (worst slice), errors, the ratio gateway/bare, and the
machine's load average. With --before DIR (an export of an earlier revision,
`git archive <rev> | tar -x -C DIR`) that revision's API runs too, on a
database migrated by its own code, in the same slices: before/after in one
sitting. The API logs as in production (INFO, JSON access lines, to a file).
Needs wrk (Debian's package; scripts/bench.sh installs it). 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import requests
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from api_load import POST_LUA, api_env, create_database, drop_database, free_port, seed, start_api, wrk  # noqa: E402

SAME_RECIPIENT_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "%(key)s"
wrk.body = '{"recipient": "+4915112345678", "message": "Load test message"}'
"""
GUNICORN_SETTINGS = ["-w", "2", "-k", "gevent", "--worker-connections", "1000", "--keep-alive", "5"]


def start_bare(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *GUNICORN_SETTINGS, "-b", f"127.0.0.1:{port}", "--chdir", str(HERE),
         "bare_flask:app"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.post(f"http://127.0.0.1:{port}/api/sms", json={"recipient": "+1"}, timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the bare Flask app did not start in 20 s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def start_before(src: Path, name: str, port: int, log_file) -> tuple[subprocess.Popen, str]:
    """An earlier revision's API from its source tree, on database `name`
    migrated by that revision's own code; returns it and its API key."""
    url = create_database(name)
    path = os.pathsep.join(str(src / d) for d in ("services/api", "common"))
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run(
        [sys.executable, "-c", f"from smsgw_api.migrate import upgrade; upgrade({url!r})"], env=env, check=True
    )
    key = seed(url)
    os.environ["PYTHONPATH"] = path  # start_api passes os.environ on
    try:
        proc = start_api({**api_env(url), "MQTT_PREFIX": f"smsgw-bench-before-{os.getpid()}/"}, port, log_file)
    finally:
        del os.environ["PYTHONPATH"]
    return proc, key


def measure(url: str, script: str, key: str, connections: int, duration: int) -> dict:
    return wrk(url, script % {"key": key}, connections, duration)


def combine(slices: list[dict], seconds: int) -> dict:
    return {
        "rps": sum(s["requests"] for s in slices) / seconds,
        "p50_ms": statistics.median(s["p50_ms"] for s in slices),
        "p99_ms": max(s["p99_ms"] for s in slices),
        "errors": sum(s["errors"] for s in slices),
        "requests": sum(s["requests"] for s in slices),
    }


def queued_rows(url: str) -> int:
    with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False)) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM messages WHERE status = 'queued'")
            return cur.fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=4, help="seconds per slice")
    ap.add_argument("--rounds", type=int, default=2, help="slices per target and cell")
    ap.add_argument("--connections", default="1,16,64")
    ap.add_argument("--before", type=Path, help="source tree of an earlier revision to measure alongside")
    args = ap.parse_args()

    name = f"smsgw_bench_ceiling_{os.getpid()}"
    url = create_database(name)
    procs: list[subprocess.Popen] = []
    before_db = None
    # Production log settings (INFO, JSON, an access line per request),
    # written to a file as a container's stderr is to its log driver.
    api_log = tempfile.TemporaryFile("w+")  # noqa: SIM115  (closed in finally)
    try:
        from smsgw_api.migrate import upgrade

        upgrade(url)
        key = seed(url)
        targets: dict[str, tuple[str, str]] = {}
        port = free_port()
        bare = start_bare(port)
        procs.append(bare)
        targets["bare"] = (f"http://127.0.0.1:{port}/api/sms", key)
        if args.before is not None:
            port = free_port()
            before_db = f"smsgw_bench_ceiling_before_{os.getpid()}"
            proc, before_key = start_before(args.before.resolve(), before_db, port, api_log)
            procs.append(proc)
            targets["before"] = (f"http://127.0.0.1:{port}/api/sms", before_key)
        port = free_port()
        procs.append(start_api(api_env(url), port, api_log))
        targets["gateway"] = (f"http://127.0.0.1:{port}/api/sms", key)

        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)", flush=True)
        columns = f"{'recipients':<10} {'conns':>5} | {'bare req/s':>10} |"
        if "before" in targets:
            columns += f" {'before req/s':>12} {'p99 ms':>7} {'ratio':>5} |"
        columns += f" {'gateway req/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'ratio':>5} | load"
        print(columns, flush=True)
        accepted = 0
        seconds = args.duration * args.rounds
        for label, script in (("distinct", POST_LUA), ("identical", SAME_RECIPIENT_LUA)):
            for c in (int(x) for x in args.connections.split(",")):
                slices: dict[str, list[dict]] = {t: [] for t in targets}
                for _ in range(args.rounds):
                    for target, (target_url, target_key) in targets.items():
                        slices[target].append(measure(target_url, script, target_key, c, args.duration))
                got = {t: combine(s, seconds) for t, s in slices.items()}
                bare_rps, gw = got["bare"]["rps"], got["gateway"]
                line = f"{label:<10} {c:>5} | {bare_rps:>10.0f} |"
                if "before" in got:
                    b = got["before"]
                    line += f" {b['rps']:>12.0f} {b['p99_ms']:>7.1f} {b['rps'] / bare_rps:>5.2f} |"
                line += (
                    f" {gw['rps']:>13.0f} {gw['p50_ms']:>7.1f} {gw['p99_ms']:>7.1f} {gw['errors']:>6}"
                    f" {gw['rps'] / bare_rps:>5.2f} | {os.getloadavg()[0]:.1f}"
                )
                print(line, flush=True)
                accepted += gw["requests"] - gw["errors"]
        load = os.getloadavg()
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        # Accepted means committed: every answered send is a queued row (a
        # few more may be rows whose answer wrk stopped waiting for at the end).
        rows = queued_rows(url)
        print(f"answered sends: {accepted}, queued rows: {rows}" + ("" if rows >= accepted else "  MISSING ROWS"))
        print("targets (issue 17): ratio >= 0.5 at 64 connections, p99 < 100 ms, >= 300 msg/s from one connection")
    finally:
        for proc in reversed(procs):
            stop(proc)
        api_log.close()
        drop_database(name)
        if before_db is not None:
            drop_database(before_db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
