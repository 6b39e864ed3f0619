"""What the worker's outcome journal costs, and how long an outage it holds.

    .venv/bin/python bench/journal_cost.py [--appends 2000] [--messages 200] [--rounds 2]

1. The file alone: bytes per entry (a +CMGS reference, a +CDS report) and
   the time of one fsync'd append, against the same appends without fsync
   (the baseline, same run, same disk: the directory given by --dir, by
   default one on the disk that holds this repository).
2. Sending: the real worker (in this process, as tests/support/workers.py
   runs it) against a zero-latency emulator and the real Postgres and
   Mosquitto, messages per second with its journal and with a journal that
   writes nothing (the baseline): one warm-up round, then `--rounds` pairs
   in ABBA order so that a change in the machine's load hits both; medians.
3. How many hours of outage the default bound (64 MiB) holds at a few rates
   of facts arriving while the database is away (during an outage no new
   send is claimed: what arrives is reports of earlier sends and, with
   direct delivery, received SMS).

Prints the load average before and after: on a shared machine the ratios
mean more than the absolute figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from shared_fixtures import create_database, drop_database  # noqa: E402

from smsgw_worker.pdu import encode_status_report  # noqa: E402
from smsgw_worker.worker.journal import PDU, SENT, Entry, Journal, encode_line  # noqa: E402

BOUND = 64 * 1024 * 1024


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def sent_fact(n: int) -> dict[str, Any]:
    return {
        "message_id": 1_000_000 + n,
        "part_id": 3_000_000 + n,
        "part_seq": 1,
        "reference": n % 256,
        "at": "2026-12-07T01:23:45.678901+00:00",
    }


def file_costs(directory: Path, appends: int) -> tuple[int, int]:
    now = datetime.now(UTC).replace(microsecond=0)
    report = encode_status_report(255, "+15550001111", 0, now, now, smsc="+15550000000")  # a +CDS's PDU
    sent_bytes = len(encode_line({"seq": 123456, "kind": SENT, "data": sent_fact(1)}))
    pdu_bytes = len(
        encode_line({"seq": 123456, "kind": PDU, "data": {"pdu": report, "origin": "+CDS", "sim_card_id": 12}})
    )
    applied_bytes = len(encode_line({"seq": 123456, "kind": "applied", "of": 123455}))
    print(
        f"bytes per entry    +CMGS reference {sent_bytes} B, +CDS report {pdu_bytes} B "
        f"(+ {applied_bytes} B for its applied line, not fsync'd)"
    )

    def timed(sync: bool) -> list[float]:
        with tempfile.TemporaryDirectory(dir=directory) as d:
            journal = Journal(d, BOUND)
            times = []
            for n in range(appends):
                t = time.perf_counter()
                if sync:
                    journal.append(SENT, **sent_fact(n))
                else:
                    journal._write(encode_line({"seq": n, "kind": SENT, "data": sent_fact(n)}), sync=False)
                times.append(time.perf_counter() - t)
            journal.close()
            return times

    baseline = timed(False)
    synced = timed(True)
    q = statistics.quantiles(synced, n=100)
    print(
        f"append + fsync     mean {statistics.mean(synced) * 1000:.3f} ms, p50 {q[49] * 1000:.3f} ms, "
        f"p99 {q[98] * 1000:.3f} ms ({appends} appends in {directory})"
    )
    print(
        f"append, no fsync   mean {statistics.mean(baseline) * 1000:.4f} ms  "
        f"(baseline; fsync'd / baseline = {statistics.mean(synced) / statistics.mean(baseline):.0f}x)"
    )
    return sent_bytes, pdu_bytes


class NullJournal(Journal):
    """The baseline: a journal that keeps nothing (no file write, no fsync)."""

    def append(self, kind: str, **data: Any) -> Entry:
        return Entry(0, kind, data)

    def applied(self, entry: Entry | None) -> None:
        return None


def send_rate(url: str, messages: int, journal_dir: Path, null: bool) -> float:
    from sqlalchemy import func, select
    from support.workers import WorkerThread
    from worker.worker_harness import settings_for

    from smsgw_common.db import make_engine, make_sessionmaker
    from smsgw_common.models import Message, SimCard, utcnow
    from smsgw_worker.emulator import Emulator
    from smsgw_worker.worker.events import Wakeup

    iccid = "8999" + "".join(str(secrets.randbelow(10)) for _ in range(15))
    number = "+1555" + "".join(str(secrets.randbelow(10)) for _ in range(7))
    modem_id = f"jbench-{secrets.token_hex(3)}"
    emu = Emulator("generic", iccid=iccid, own_number=number, send_latency=0.0, report_delay=0.05).start()
    engine = make_engine(url, pool_size=2)
    Session = make_sessionmaker(engine)
    settings = settings_for(
        url,
        f"smsgw-bench-{secrets.token_hex(3)}/",
        modem_id,
        claim_batch=20,
        claim_interval=0.2,
        refresh_interval=30.0,
        sweep_interval=30.0,
        journal_dir=str(journal_dir / modem_id),
    )
    running = WorkerThread(settings, emu.device, f"bench-{modem_id}")
    if null:
        ctx = running.worker.context
        ctx.journal.close()
        ctx.journal = NullJournal(journal_dir / f"{modem_id}-null", BOUND)
    try:
        running.start(30)
        with Session.begin() as s:
            sim_id = s.scalar(select(SimCard.id).where(SimCard.iccid == iccid))
        with Session.begin() as s:
            now = utcnow()
            s.add_all(
                Message(
                    direction="outbound",
                    sender=number,
                    recipient="+15550001111",
                    message=f"journal bench {n}",
                    status="queued",
                    queued_at=now,
                    sim_card_id=sim_id,
                )
                for n in range(messages)
            )
        start = time.monotonic()
        running.worker.context.events.put(Wakeup(0))
        deadline = start + 600
        while time.monotonic() < deadline:
            with Session() as s:
                left = s.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.sim_card_id == sim_id, Message.status.in_(("queued", "sending")))
                )
            if not left:
                break
            time.sleep(0.05)
        else:
            raise SystemExit("the worker did not send everything within 600 s")
        return messages / (time.monotonic() - start)
    finally:
        running.stop(30)
        emu.stop()
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=HERE.parent, help="where the journal files go (a real disk)")
    args = parser.parse_args()
    if args.appends < 100 or args.messages < 10 or not 1 <= args.rounds <= 10:
        parser.error("--appends >= 100, --messages >= 10, --rounds 1..10")
    print(f"load before        {load()}  ({os.cpu_count()} cores)")

    _, pdu_bytes = file_costs(args.dir, args.appends)

    name = f"smsgw_bench_{secrets.token_hex(4)}"
    url = create_database(name)
    try:
        from smsgw_api.migrate import upgrade

        upgrade(url)
        with_journal: list[float] = []
        without: list[float] = []
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            send_rate(url, args.messages, Path(d), null=True)  # warm-up (imports, caches), not counted
            # ABBA order: a load that drifts during the run hits both alike.
            for n in range(args.rounds):
                order = (True, False) if n % 2 == 0 else (False, True)
                for null in order:
                    (without if null else with_journal).append(send_rate(url, args.messages, Path(d), null=null))
        w, b = statistics.median(with_journal), statistics.median(without)
        print(f"send, journal      {w:.1f} msg/s ({1000 / w:.2f} ms/msg)  rounds {[round(x, 1) for x in with_journal]}")
        print(f"send, no journal   {b:.1f} msg/s ({1000 / b:.2f} ms/msg)  rounds {[round(x, 1) for x in without]}")
        print(f"journal cost       {(1000 / w - 1000 / b):+.2f} ms per send; with/without = {w / b:.2f}")
    finally:
        drop_database(name)

    entries = BOUND // pdu_bytes
    print(f"outage in 64 MiB   {entries} facts of {pdu_bytes} B:", end="")
    for rate in (0.1, 1.0, 10.0):
        print(f"  {entries / rate / 3600:,.0f} h at {rate:g}/s", end="")
    print()
    print(f"load after         {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
