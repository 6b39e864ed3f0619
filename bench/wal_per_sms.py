"""Bytes written per SMS: WAL and data-file bytes of a whole outbound lifecycle
(accepted -> sending -> sent -> delivered), with the WAL broken down by table,
index and record type.

    .venv/bin/python bench/wal_per_sms.py [--count 300] [--port 25950] [--set wal_compression=lz4]

On a Pi the database lives on an SD card, whose wear is bytes written. The
figures come from a Postgres cluster of the script's own (initdb into a
temporary folder, its own port), so nothing else on the machine writes WAL
into the measured window. The cluster keeps the production settings that
matter for WAL (wal_level, full_page_writes, synchronous_commit on); --set
tries others (docs/deployment.md, "SD cards").

Method: `--history` delivered messages are written by SQL first (a gateway
that has run a while), then the API (gunicorn, as deployed) and one emulated
modem worker with delivery reports run against the private cluster; the idle
WAL rate (the pipeline's cursors, the worker's refreshes) is measured first
and subtracted. A warm-up batch touches pages after a CHECKPOINT; full-page
images still in the measured window (pages a random key hits for the first
time since the checkpoint) are counted apart, and the full-page-image cost of
a batch right after a checkpoint is printed too. Autovacuum is off. Data-file
bytes are the buffers written by a CHECKPOINT (and the background writer)
over the measured batch.
"""

from __future__ import annotations

import argparse
import atexit
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCK = 8192


def pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise SystemExit("initdb not found: install Debian's postgresql package")


class PrivateCluster:
    """A throw-away Postgres cluster on 127.0.0.1:port (initdb refuses root,
    so as root it runs as the `postgres` user)."""

    def __init__(self, port: int | None = None, settings: list[str] = ()):
        self.bindir = pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="smsgw-wal-"))
        self.data = self.dir / "data"
        self.port = port or self._free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        atexit.register(self.stop)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"])
        # Checkpoints only when asked, so that the measured window has none by chance.
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c checkpoint_timeout=1h "
            "-c max_wal_size=4GB -c max_connections=60 -c shared_buffers=64MB"
            # The measured window's WAL is read after the closing CHECKPOINT,
            # which would otherwise recycle its segments.
            " -c wal_keep_size=1GB"
            # Autovacuum's and autoanalyze's WAL depends on when they happen
            # to run, not on the messages: left out of the measured window.
            " -c autovacuum=off"
        ) + "".join(f" -c {setting}" for setting in settings)
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.dir / "pg.log"),
                "-w",
                "start",
            ]
        )
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def _free_port() -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _run(self, argv: list[str]) -> None:
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=300, help="messages in the measured batch")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle WAL rate measured first")
    ap.add_argument("--port", type=int, help="the private cluster's port (default: any free one)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Postgres setting for the cluster, e.g. wal_compression=lz4 (docs/deployment.md, SD cards)",
    )
    ap.add_argument(
        "--history", type=int, default=20000, help="delivered messages already in the database (written by SQL)"
    )
    args = ap.parse_args()

    for setting in args.set:
        if "=" not in setting or not setting.split("=", 1)[0].replace("_", "").isalnum():
            raise SystemExit(f"--set takes NAME=VALUE, not {setting!r}")
    cluster = PrivateCluster(args.port, args.set)
    # pipeline_common makes its database through the tests' admin URL.
    os.environ["TEST_PG_ADMIN_URL"] = cluster.admin_url
    sys.path.insert(0, str(HERE))
    from pipeline_common import Stack, wait_until
    from sqlalchemy import create_engine, text

    admin = create_engine(
        cluster.admin_url.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
    )
    stack = Stack("wal")
    dbname = stack.dbname
    db = create_engine(stack.database_url, isolation_level="AUTOCOMMIT")
    with db.connect() as conn:
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_walinspect"))

    def lsn() -> str:
        with admin.connect() as conn:
            return conn.execute(text("SELECT pg_current_wal_insert_lsn()::text")).scalar()

    def wal_bytes(start: str, end: str) -> int:
        with admin.connect() as conn:
            return int(conn.execute(text("SELECT pg_wal_lsn_diff(:e, :s)"), {"s": start, "e": end}).scalar())

    def buffers_written() -> int:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return int(
                conn.execute(
                    text("SELECT buffers_checkpoint + buffers_clean + buffers_backend FROM pg_stat_bgwriter")
                ).scalar()
            )

    def send(n: int, tag: str) -> list[int]:
        ids = []
        for i in range(n):
            resp = stack.http.post(
                stack.base + "/api/sms",
                json={"recipient": f"+4917{secrets.randbelow(10**8):08d}", "message": f"wal {tag} {i}"},
                timeout=10,
            )
            if resp.status_code != 200:
                raise SystemExit(f"POST /api/sms answered {resp.status_code}: {resp.text}")
            ids.append(resp.json()["message_id"])
        return ids

    def delivered(ids: list[int]) -> bool:
        with db.connect() as conn:
            done = conn.execute(
                text("SELECT count(*) FROM messages WHERE id = ANY(:ids) AND status = 'delivered'"), {"ids": ids}
            ).scalar()
        return done == len(ids)

    # A gateway that has been running a while: indexes a few levels deep,
    # and the tables past their first pages (a BRIN index summarises the
    # range it was created on, later ones only when VACUUM says so).
    with db.connect() as conn:
        conn.execute(
            text(
                """
                WITH m AS (
                    INSERT INTO messages (direction, sender, recipient, message, status, encoding, segments,
                                          timestamp, queued_at, sending_at, sent_at, delivered_at, updated_at)
                    SELECT 'outbound', '+491700000001', '+4917' || lpad((i * 7919 % 100000000)::text, 8, '0'),
                           'history ' || i, 'delivered', 'GSM-7', 1, t, t, t, t, t, t
                    FROM generate_series(1, :n) AS i,
                         LATERAL (SELECT now() - make_interval(secs => (:n - i) * 10)) AS at(t)
                    RETURNING id, timestamp),
                e AS (
                    INSERT INTO message_events (message_id, state, at, source)
                    SELECT m.id, s.state, m.timestamp, 'history' FROM m,
                           unnest(ARRAY['queued', 'sending', 'sent', 'delivered']) AS s(state))
                INSERT INTO logs (action, details, status, timestamp)
                SELECT 'send_sms', 'SMS ' || m.id || ' queued', 'queued', m.timestamp FROM m
                """
            ),
            {"n": args.history},
        )
        conn.execute(text("VACUUM ANALYZE"))

    stack.add_workers(1, EMU_SEND_LATENCY=0, EMU_REPORT_DELAY=0.05)

    # Warm-up after a checkpoint: every page the lifecycle touches gets its
    # full-page image now, not in the measured window.
    with admin.connect() as conn:
        conn.execute(text("CHECKPOINT"))
    cold_start = lsn()
    warm = send(args.warmup, "warmup")
    wait_until(lambda: delivered(warm), 120, "the warm-up delivered")
    cold_end = lsn()

    time.sleep(2)
    idle_start, t0 = lsn(), time.monotonic()
    time.sleep(args.idle)
    idle_rate = wal_bytes(idle_start, lsn()) / (time.monotonic() - t0)

    buffers0 = buffers_written()
    start, t0 = lsn(), time.monotonic()
    ids = send(args.count, "measured")
    accepted = lsn()
    wait_until(lambda: delivered(ids), 300, "every measured message delivered")
    end, elapsed = lsn(), time.monotonic() - t0
    with admin.connect() as conn:
        conn.execute(text("CHECKPOINT"))
    data_bytes = (buffers_written() - buffers0) * BLOCK

    total = wal_bytes(start, end)
    with db.connect() as conn:
        # A key that lands on a random page (a recipient's number) costs that
        # page's full image once per checkpoint: counted apart, since how
        # often depends on checkpoint_timeout, not on the message.
        fpi = int(
            conn.execute(
                text("SELECT coalesce(sum(fpi_length), 0) FROM pg_get_wal_records_info(:s, :e)"), {"s": start, "e": end}
            ).scalar()
        )
    net = max(total - fpi - idle_rate * elapsed, 0)
    per_msg = net / args.count
    accept_per_msg = wal_bytes(start, accepted) / args.count
    cold_per_msg = wal_bytes(cold_start, cold_end) / args.warmup

    # Where the bytes go: WAL records in the window by relation.
    with db.connect() as conn:
        rows = conn.execute(
            text(
                """
                WITH recs AS (
                    SELECT resource_manager, record_length, fpi_length,
                           substring(block_ref from 'rel \\d+/\\d+/(\\d+)')::oid AS filenode
                    FROM pg_get_wal_records_info(:s, :e))
                SELECT coalesce(c.relname, r.resource_manager) AS what, count(*) AS records,
                       sum(r.record_length) AS bytes, sum(r.fpi_length) AS fpi
                FROM recs r LEFT JOIN pg_class c ON c.relfilenode = r.filenode
                GROUP BY 1 ORDER BY 3 DESC LIMIT 30
                """
            ),
            {"s": start, "e": end},
        ).all()
        # And by record type within each relation: a non-HOT UPDATE against
        # a HOT_UPDATE tells whether an update had to touch every index.
        kinds = conn.execute(
            text(
                """
                WITH recs AS (
                    SELECT resource_manager || ' ' || record_type AS kind, record_length,
                           substring(block_ref from 'rel \\d+/\\d+/(\\d+)')::oid AS filenode
                    FROM pg_get_wal_records_info(:s, :e))
                SELECT coalesce(c.relname, '-') AS what, r.kind, count(*) AS records, sum(r.record_length) AS bytes
                FROM recs r LEFT JOIN pg_class c ON c.relfilenode = r.filenode
                GROUP BY 1, 2 ORDER BY 4 DESC LIMIT 30
                """
            ),
            {"s": start, "e": end},
        ).all()

    load = os.getloadavg()
    print(
        f"bytes written per SMS lifecycle (accepted -> sent -> delivered), n={args.count}, "
        f"after {args.history:,} delivered messages of history, database {dbname}"
    )
    print(f"  machine load (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; elapsed {elapsed:.1f} s")
    if args.set:
        print(f"  settings: {' '.join(args.set)}")
    print(f"  WAL per message, steady state: {per_msg:,.0f} bytes  (idle rate {idle_rate:,.0f} B/s subtracted)")
    print(f"    plus full-page images of pages first touched since the last checkpoint: {fpi / args.count:,.0f} bytes")
    print(f"  WAL per message until the accept was answered (images included): {accept_per_msg:,.0f} bytes")
    print(f"  WAL per message right after a checkpoint (full-page images): {cold_per_msg:,.0f} bytes")
    print(f"  data-file bytes per message (checkpoint + bgwriter): {data_bytes / args.count:,.0f} bytes")
    print("  WAL in the measured window by relation (records, bytes, of which full-page images):")
    for what, records, nbytes, fpi in rows:
        print(f"    {what:<40} {records:>7} {int(nbytes):>11,} {int(fpi or 0):>10,}")
    print("  by relation and record type (records, bytes, bytes per message):")
    for what, kind, records, nbytes in kinds:
        print(f"    {what:<32} {kind:<24} {records:>7} {int(nbytes):>11,} {int(nbytes) / args.count:>8,.0f}")
    print(f"  target < 4,096 bytes of WAL per lifecycle: {'PASS' if per_msg < 4096 else 'FAIL'}")
    stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
