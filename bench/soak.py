"""Soak test: does any process's memory grow under a steady load?

    .venv/bin/python bench/soak.py [--minutes 30] [--warmup 3] [--rate 60] [--modems 2]

Starts the stack as deployed, on 127.0.0.1 with a database of its own: the
API under gunicorn + gevent (bench/api_load.py's environment), the events
runner alone (`python -m smsgw_api pipeline`, so its memory is its own;
`--pipeline-in-api` runs it inside the API worker, as deployed by default), and
`--modems` demo-profile modem workers (`MODEM_EMULATOR=generic python -m
smsgw_worker run`: an emulated modem inside the worker, sending and
reporting delivery). Clients post `POST /api/sms` at `--rate` messages/s
(distinct recipients) for `--minutes`; a Socket.IO client stays connected as
a dashboard would and another connects and leaves every minute. Every minute
the RSS of each process is printed with the machine's load.

Exit code 1 when a process's RSS at the end is more than `--limit` percent
(default 5) above its RSS at the end of the warm-up, when a process died, or
when a send was refused. A queue that grew instead of draining (the modems
fell behind) is printed as a note: that backlog waits in Postgres, not in a
process, but the run was then not at a steady state.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import socketio
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import api_env, free_port, seed, start_api  # one way to start the API for every bench
from shared_fixtures import create_database, drop_database  # api_load put tests/ on the path


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except FileNotFoundError:
        return []


class Sender:
    """`threads` keep-alive clients that together post `rate` messages/s on a
    fixed schedule (a late client catches up, never bursts beyond a second)."""

    def __init__(self, port: int, key: str, rate: float, threads: int, until: float):
        self.port, self.key, self.until = port, key, until
        self.interval = threads / rate
        self.accepted = self.errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.count = 0

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=30)

    def _post(self, conn: http.client.HTTPConnection, n: int) -> bool:
        body = json.dumps({"recipient": f"+4915{n % 1_000_000_000:09d}", "message": f"Soak message {n}"})
        conn.request("POST", "/api/sms", body, {"Content-Type": "application/json", "X-API-Key": self.key})
        resp = conn.getresponse()
        resp.read()
        return 200 <= resp.status < 300

    def _run(self, index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        due = time.monotonic() + index * self.interval / len(self.threads)
        while True:
            now = time.monotonic()
            if now >= self.until:
                break
            if due > now:
                time.sleep(min(due - now, self.until - now))
                continue
            due = max(due + self.interval, now - 1.0)
            with self.lock:
                self.count += 1
                n = self.count
            try:
                ok = self._post(conn, n)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                ok = False
            with self.lock:
                if ok:
                    self.accepted += 1
                else:
                    self.errors += 1
        conn.close()


class Browsers:
    """A dashboard that stays connected over Socket.IO (counting the status
    updates it is sent) and one that comes and goes every minute, so that the
    API's rooms and socket grants are soaked too."""

    def __init__(self, port: int, key: str):
        self.base, self.auth = f"http://127.0.0.1:{port}", {"api_key": key}
        self.updates = self.visits = 0
        self.steady = self._connect(counting=True)

    def _connect(self, counting: bool = False) -> socketio.Client:
        client = socketio.Client(reconnection=False)
        if counting:
            client.on("sms_status_update", self._count)
        client.connect(self.base, auth=self.auth, transports=["websocket"], wait_timeout=10)
        return client

    def _count(self, data=None) -> None:
        self.updates += 1

    def visit(self) -> None:
        self._connect().disconnect()
        self.visits += 1

    def close(self) -> None:
        self.steady.disconnect()


def queue_depth(url: str) -> tuple[int, int]:
    """(messages not yet sent, messages sent or delivered)"""
    with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False)) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE status IN ('queued', 'sending')),"
                " count(*) FILTER (WHERE status IN ('sent', 'delivered')) FROM messages"
            )
            waiting, done = cur.fetchone()
    conn.close()
    return waiting, done


def spawn(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def drain(pipe, log: Path) -> None:
    """Copy the API's stderr (a pipe from start_api) to a file, so that a
    long run never blocks gunicorn on a full pipe."""

    def copy() -> None:
        with open(log, "w") as fh:
            for line in pipe:
                fh.write(line)

    threading.Thread(target=copy, daemon=True).start()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_registered(url: str, modem_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT count(*) FROM sim_cards s JOIN modems m ON m.id = s.modem_id"
                    " WHERE m.online AND s.status = 'active' AND m.id = ANY(%s)",
                    (modem_ids,),
                )
                if cur.fetchone()[0] == len(modem_ids):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"modem workers {modem_ids} did not register in {timeout:.0f} s")
                time.sleep(0.5)
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=3, help="minutes before the baseline RSS is taken")
    parser.add_argument("--rate", type=float, default=60, help="messages posted per second")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--modems", type=int, default=2)
    parser.add_argument("--api-workers", type=int, default=1, help="gunicorn workers (the issue measured one)")
    parser.add_argument(
        "--pipeline-in-api",
        action="store_true",
        help="the events runner inside the API worker (the default deployment) instead of its own process",
    )
    parser.add_argument("--limit", type=float, default=5.0, help="allowed RSS growth after the warm-up, percent")
    parser.add_argument("--sample-seconds", type=float, default=60, help="seconds between RSS lines")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.minutes:
        parser.error("--warmup must be shorter than --minutes")

    # A stopped soak still stops what it started and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    name = f"smsgw_bench_soak_{os.getpid()}"
    url = create_database(name)
    logs = Path(tempfile.mkdtemp(prefix="smsgw-soak-"))
    procs: dict[str, subprocess.Popen] = {}
    try:
        from smsgw_api.migrate import upgrade

        upgrade(url)
        key = seed(url)
        # seed() makes two SIMs in modems that no worker serves; the run's own
        # modem workers register theirs, and routing must choose only those.
        with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False)) as conn:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM sim_cards")
                cur.execute("DELETE FROM modems")
        conn.close()

        env = dict(api_env(url), LOG_LEVEL="WARNING", PIPELINE_BACKGROUND="auto" if args.pipeline_in_api else "off")
        api_port = free_port()
        procs["api"] = start_api(env, api_port, workers=args.api_workers)
        drain(procs["api"].stderr, logs / "api.log")
        if not args.pipeline_in_api:
            procs["pipeline"] = spawn([sys.executable, "-m", "smsgw_api", "pipeline"], env, logs / "pipeline.log")
        modem_ids = [f"soak{i}" for i in range(1, args.modems + 1)]
        for modem_id in modem_ids:
            worker_env = dict(env, MODEM_ID=modem_id, MODEM_EMULATOR="generic", WORKER_CLAIM_INTERVAL="1")
            procs[modem_id] = spawn([sys.executable, "-m", "smsgw_worker", "run"], worker_env, logs / f"{modem_id}.log")
        wait_registered(url, modem_ids, 60)

        def watched() -> dict[str, int]:
            pids = {"api master": procs["api"].pid}
            for i, pid in enumerate(sorted(children(procs["api"].pid)), 1):
                pids[f"api worker {i}"] = pid
            if "pipeline" in procs:
                pids["pipeline"] = procs["pipeline"].pid
            for modem_id in modem_ids:
                pids[f"worker {modem_id}"] = procs[modem_id].pid
            return pids

        started = time.monotonic()
        until = started + args.minutes * 60
        browsers = Browsers(api_port, key)
        sender = Sender(api_port, key, args.rate, args.clients, until)
        sender.start()
        names = list(watched())
        print(
            f"soak: {args.minutes:g} min at {args.rate:g} msg/s, {args.modems} emulated modem workers, "
            f"{args.api_workers} API worker(s), warm-up {args.warmup:g} min; logs in {logs}",
            flush=True,
        )
        print("  min  load1  accepted errors  queued  sent  | " + "  ".join(f"{n:>14}" for n in names), flush=True)
        series: list[tuple[float, dict[str, int | None]]] = []
        backlog: list[int] = []
        next_sample = started
        while True:
            now = time.monotonic()
            if now >= next_sample:
                pids = watched()
                rss = {n: rss_kib(pids[n]) if n in pids else None for n in names}
                minute = (now - started) / 60
                waiting, done = queue_depth(url)
                series.append((minute, rss))
                backlog.append(waiting)
                cells = "  ".join(f"{(v or 0) / 1024:11.1f} MB" for v in rss.values())
                print(
                    f"{minute:5.1f}  {os.getloadavg()[0]:5.2f}  {sender.accepted:8d} {sender.errors:6d}  "
                    f"{waiting:6d} {done:6d}  | {cells}",
                    flush=True,
                )
                browsers.visit()
                for label, proc in procs.items():
                    if proc.poll() is not None:
                        raise SystemExit(f"{label} exited with {proc.returncode}; see {logs}")
                if now >= until:
                    break
                next_sample = min(next_sample + args.sample_seconds, until)
            time.sleep(max(0.0, min(next_sample, until) - time.monotonic()))
        sender.join()
        browsers.close()
        print(f"a dashboard socket received {browsers.updates} status updates; {browsers.visits} sockets came and went")

        return verdict(series, backlog, args, sender)
    finally:
        for proc in reversed(list(procs.values())):
            stop(proc)
        drop_database(name)


def verdict(series, backlog, args, sender) -> int:
    warm = next((rss for minute, rss in series if minute >= args.warmup - 1e-6), series[0][1])
    last = series[-1][1]
    failed = False
    print(f"accepted {sender.accepted} messages ({sender.errors} errors); RSS growth after the warm-up:")
    for name, base in warm.items():
        end = last.get(name)
        if not base or not end:
            print(f"  {name:>16}: gone")
            failed = True
            continue
        growth = (end - base) / base * 100
        bad = growth > args.limit
        failed |= bad
        print(
            f"  {name:>16}: {base / 1024:7.1f} -> {end / 1024:7.1f} MB  {growth:+6.1f} %"
            f"{'  > ' + format(args.limit, 'g') + ' %: FAIL' if bad else ''}"
        )
    if sender.errors:
        print(f"FAIL: {sender.errors} sends were refused or failed")
        failed = True
    if len(backlog) > 2 and backlog[-1] > max(backlog[1], 10 * args.rate):
        # Not a failure: the backlog waits in Postgres, not in a process; but
        # the send path was not at a steady state (a loaded machine, or too
        # high a rate for the modems), so say so next to the figures.
        print(f"note: the modems fell behind (queue {backlog[1]} -> {backlog[-1]}); lower --rate or add --modems")
    print("soak: FAIL" if failed else "soak: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
