"""One modem worker against a zero-latency emulator: how many segments per
second can it push, how much CPU does each cost, and how big is it?

    .venv/bin/python bench/worker_throughput.py [--messages 500] [--parts 1]

Needs Postgres and Mosquitto on 127.0.0.1 (TEST_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/test). It creates a scratch database,
runs `python -m smsgw_worker run` as a child process against an emulator
living in this process (so the emulator's CPU is not counted), and drops the
database afterwards. Target: < 5 ms CPU per segment, RSS < 40 MB.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from sqlalchemy import func, select

from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.models import Message, MessagePart, Modem, SimCard, utcnow
from smsgw_worker.emulator import Emulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from shared_fixtures import create_database, drop_database


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--parts", type=int, default=1, help="segments per message (1-5)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    if not 1 <= args.parts <= 5 or args.messages < 1:
        parser.error("--parts must be 1..5 and --messages at least 1")

    name = f"smsgw_bench_{secrets.token_hex(4)}"
    url = create_database(name)
    emu = proc = None
    try:
        from smsgw_api.migrate import upgrade

        upgrade(url)
        engine = make_engine(url, pool_size=2)
        Session = make_sessionmaker(engine)
        emu = Emulator(
            "generic", iccid="8999000000000000001", own_number="+15550000001", send_latency=0.0, report_delay=0.05
        ).start()
        modem_id = "bench-1"
        env = dict(
            os.environ,
            DATABASE_URL=url,
            MODEM_ID=modem_id,
            MODEM_DEVICE=emu.device,
            MQTT_HOST="127.0.0.1",
            MQTT_PREFIX=f"smsgw-bench-{secrets.token_hex(3)}/",
            LOG_LEVEL="WARNING",
            WORKER_CLAIM_INTERVAL="0.2",
            WORKER_CLAIM_BATCH="20",
            JOURNAL_DIR=tempfile.mkdtemp(prefix="smsgw-bench-journal-"),
        )
        proc = subprocess.Popen([sys.executable, "-m", "smsgw_worker", "run"], env=env)
        ps = psutil.Process(proc.pid)

        def online():
            with Session() as s:
                row = s.get(Modem, modem_id)
                return (
                    row is not None and row.online and s.scalar(select(SimCard.id).where(SimCard.modem_id == modem_id))
                )

        sim_id = wait(online, 30, "the worker to come online")
        print(f"worker pid {proc.pid} online", flush=True)
        time.sleep(0.5)
        segment = "x" * 153
        text = "y" * 150 if args.parts == 1 else segment * args.parts
        cpu0 = sum(ps.cpu_times()[:2])
        with Session.begin() as s:
            s.add_all(
                [
                    Message(
                        direction="outbound",
                        recipient="+15550001111",
                        message=text,
                        status="queued",
                        segments=args.parts,
                        sim_card_id=sim_id,
                        queued_at=utcnow(),
                    )
                    for _ in range(args.messages)
                ]
            )
        started = time.monotonic()
        total = args.messages * args.parts

        def sent_parts():
            with Session() as s:
                return (
                    s.scalar(
                        select(func.count())
                        .select_from(MessagePart)
                        .where(MessagePart.status.in_(("sent", "delivered")))
                    )
                    >= total
                )

        wait(sent_parts, args.timeout, "every segment to be sent")
        elapsed = time.monotonic() - started

        def reports_done():
            with Session() as s:
                return (
                    s.scalar(select(func.count()).select_from(Message).where(Message.status == "delivered"))
                    >= args.messages
                )

        wait(reports_done, 60, "the delivery reports")
        cpu = sum(ps.cpu_times()[:2]) - cpu0
        mem = ps.memory_full_info()
        rss = mem.rss
        threads = sorted(((t.user_time + t.system_time, t.id) for t in ps.threads()), reverse=True)
        print(f"messages           {args.messages} x {args.parts} segment(s) = {total} segments")
        print(f"send throughput    {total / elapsed:8.1f} segments/s  ({elapsed:.2f} s to +CMGS for all)")
        print(f"worker CPU         {cpu * 1000 / total:8.2f} ms per segment (incl. its delivery report)")
        print(
            "worker threads     "
            + ", ".join(f"{'main' if tid == proc.pid else tid}: {cpu_s:.2f}s" for cpu_s, tid in threads[:4])
            + " (CPU since start)"
        )
        print(f"worker RSS         {rss / 2**20:8.1f} MB  (USS {mem.uss / 2**20:.1f} MB, PSS {mem.pss / 2**20:.1f} MB)")
        print(f"emulator recorded  {emu.sent.total} segments")
        print("target < 5 ms CPU per segment:", "met" if cpu * 1000 / total < 5 else "NOT met")
        print("target < 40 MB RSS:           ", "met" if rss < 40 * 2**20 else "NOT met")
        engine.dispose()
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if emu is not None:
            emu.stop()
        drop_database(name)


if __name__ == "__main__":
    sys.exit(main())
