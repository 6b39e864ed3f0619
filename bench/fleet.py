"""Many sites, one centre: edge nodes cut off and back, every message reconciled (issue 16).

    .venv/bin/python bench/fleet.py [--nodes 10] [--modems 4] [--cut 3] [--partition 600]
        [--rate 8] [--latency 1] [--inbound-every 20]

One centre (a Postgres and a Mosquitto of the bench's own, which take the
nodes only over TLS) and `--nodes` edge nodes, each a network namespace of
its own on a test WAN (tests/support/wan.py), each with `--modems` modem workers on emulated
modems, production timers, `--latency` seconds per send. Load: `--rate`
outbound messages/s spread over every SIM, committed as the centre's API
commits them (each for its SIM, so the messages of a node that is cut off
wait for it), and an inbound SMS at every modem every `--inbound-every`
seconds. After a minute of that, `--cut` nodes are black-holed for
`--partition` seconds, then restored; the load goes on for a minute more and
the bench waits for everything to settle. The centre's pipeline
(`python -m smsgw_api pipeline`: the events consumer and the sweeper, with
Redis database 15) runs too, unless `--no-pipeline`: it sees a cut node's
modems go offline (their last wills) and moves their queued messages to
SIMs that can send.

It prints, per cut node, the seconds from the link's return to its next
send at a modem and to the centre's broker hearing every modem of it online
again; the centre's CPU (share of one core) and memory (PSS) per 100 modems;
the send rate over the run; and the reconciliation of every message against
what the emulated modems transmitted: lost (an outbound message not
delivered, an inbound SMS not recorded) and duplicated (transmitted twice,
recorded twice). Exit 1 when any is lost or duplicated, or not settled within
`--settle` seconds (keep `--rate` under the modems' pace, modems / latency).
Needs root (the WAN).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.mqtt import Listener  # noqa: E402
from support.pipeline import add_outbound  # noqa: E402
from support.private_mosquitto import PrivateMosquitto  # noqa: E402
from support.private_postgres import PrivatePostgres  # noqa: E402
from support.tls import make_server_tls  # noqa: E402
from support.wan import Wan  # noqa: E402
from support.workers import EmulatedWorker, launch_worker, wait_worker_ready  # noqa: E402

from smsgw_common.models import Message, utcnow  # noqa: E402


def centre_usage(pg: PrivatePostgres, others: list[int]) -> tuple[float, float]:
    """CPU seconds so far and PSS in MB of the centre's processes."""
    pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True), *map(psutil.Process, others)]
    cpu = pss = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            pss += p.memory_full_info().pss / 2**20
        except psutil.NoSuchProcess:
            continue
    return cpu, pss


class Load(threading.Thread):
    """Outbound messages at `rate`/s over every SIM, round robin, and an
    inbound SMS at each modem every `inbound_every` s; each text unique."""

    def __init__(self, Session, workers: list[EmulatedWorker], rate: float, inbound_every: float):
        super().__init__(daemon=True)
        self.Session, self.workers, self.rate, self.inbound_every = Session, workers, rate, inbound_every
        self.stopping = threading.Event()
        self.queued: dict[int, str] = {}  # message id -> text
        self.intended: dict[int, int] = {}  # message id -> the SIM it was queued for
        self.injected: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        turn = itertools.cycle(self.workers)
        next_inbound = time.monotonic() + self.inbound_every
        n = 0
        while not self.stopping.wait(1 / self.rate):
            w = next(turn)
            n += 1
            text = f"out {n} via {w.modem_id}"
            try:
                message_id = add_outbound(self.Session, w.sim_id, None, text, sender=w.number, queued_at=utcnow())
                self.queued[message_id] = text
                self.intended[message_id] = w.sim_id
            except Exception as exc:  # the centre's own database is not cut: say so, go on
                self.errors.append(f"queue: {exc}")
            if time.monotonic() >= next_inbound:
                next_inbound += self.inbound_every
                for w in self.workers:
                    text = f"in {len(self.injected)} at {w.modem_id}"
                    try:
                        w.inject("+4915112345678", text)
                        self.injected.append(text)
                    except Exception as exc:
                        self.errors.append(f"inject: {exc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--modems", type=int, default=4)
    ap.add_argument("--cut", type=int, default=3, help="nodes cut off at once")
    ap.add_argument("--partition", type=float, default=600.0, help="seconds")
    ap.add_argument("--rate", type=float, default=8.0, help="outbound messages/s over all SIMs")
    ap.add_argument("--latency", type=float, default=1.0, help="seconds per send at each modem")
    ap.add_argument("--inbound-every", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=300.0, help="seconds allowed to drain at the end")
    ap.add_argument(
        "--no-pipeline", action="store_true", help="without the centre's sweeper: a cut node's messages wait for it"
    )
    args = ap.parse_args()

    load_before = os.getloadavg()
    wan = Wan(nodes=args.nodes)
    tls = make_server_tls(Path(tempfile.mkdtemp(prefix="smsgw-fleet-tls-")), wan.centre)
    pg = PrivatePostgres(listen=wan.centre, trust=str(wan.net), max_connections=400, tls=tls)
    mq = PrivateMosquitto(listen=wan.centre, tls=tls)
    logs = Path(pg.dir) / "logs"
    logs.mkdir()
    workers: list[tuple[int, EmulatedWorker]] = []
    listener = pipeline = None
    try:
        name = f"smsgw_fleet_{secrets.token_hex(3)}"
        pg.create_database(name)
        from smsgw_api.migrate import upgrade

        upgrade(pg.url(name))
        engine = create_engine(pg.url(name), pool_size=4)
        Session = sessionmaker(engine, expire_on_commit=False)
        prefix = f"smsgw-fleet-{secrets.token_hex(3)}/"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "REDIS_", "WORKER_"))}
        env.update(
            DATABASE_URL=pg.url(name, host=wan.centre) + f"?sslmode=verify-full&sslrootcert={tls.ca}",
            MQTT_HOST=wan.centre,
            MQTT_PORT=str(mq.port),
            MQTT_CA_FILE=str(tls.ca),
            MQTT_PREFIX=prefix,
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        listener = Listener([f"{prefix}modems/+/state"], port=mq.port)
        centre_pids = [mq.proc.pid]
        if not args.no_pipeline:
            # The centre's leader-elected loops (sweeper, events), production timers.
            penv = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "REDIS_"))}
            penv.update(
                DATABASE_URL=pg.url(name),
                MQTT_HOST="127.0.0.1",
                MQTT_PORT=str(mq.port),
                MQTT_PREFIX=prefix,
                REDIS_URL="redis://127.0.0.1:6379/15",
                JWT_SECRET=secrets.token_urlsafe(48),
                LOG_LEVEL="WARNING",
            )
            with open(logs / "pipeline.log", "wb") as out:
                pipeline = subprocess.Popen(
                    [sys.executable, "-m", "smsgw_api", "pipeline"], env=penv, stdout=out, stderr=subprocess.STDOUT
                )
            centre_pids.append(pipeline.pid)
        started = time.monotonic()
        for node in range(args.nodes):
            for _ in range(args.modems):
                w = launch_worker(
                    env,
                    sys.executable,
                    logs,
                    args.latency,
                    fast=False,
                    host=wan.addresses[node],
                    wrap=lambda argv, node=node: wan.inside(node, argv),
                    EMU_KEEP="1000000",
                )
                workers.append((node, w))
        for _, w in workers:
            wait_worker_ready(w, Session, timeout=300)
        modems = len(workers)
        print(
            f"fleet: {args.nodes} nodes x {args.modems} modems up in {time.monotonic() - started:.0f} s; "
            f"load before {load_before[0]:.1f}",
            flush=True,
        )

        load = Load(Session, [w for _, w in workers], args.rate, args.inbound_every)
        cpu0, _ = centre_usage(pg, centre_pids)
        t0 = time.monotonic()
        load.start()
        time.sleep(60)
        cut = list(range(args.cut))
        ports = [pg.port, mq.port]
        for node in cut:
            wan.cut(node, ports)
        print(f"cut nodes {cut} for {args.partition:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
        deadline = time.monotonic() + args.partition
        while time.monotonic() < deadline:
            time.sleep(min(60.0, max(0.0, deadline - time.monotonic())))
            print(f"  {deadline - time.monotonic():.0f} s to go; load {os.getloadavg()[0]:.1f}", flush=True)
        restored_wall = time.time()
        for node in cut:
            wan.restore(node)
        restored = time.monotonic()

        # Back: the first send at each cut node, and its modems online at the centre.
        resume: dict[int, float] = {}
        online: dict[int, float] = {}
        while time.monotonic() - restored < 120 and (len(resume) < len(cut) or len(online) < len(cut)):
            for node in cut:
                mine = [w for n, w in workers if n == node]
                if node not in resume:
                    times = [r["at"] for w in mine for r in w.sent() if r["at"] > restored_wall]
                    if times:
                        resume[node] = min(times) - restored_wall
                if node not in online:
                    last = {}
                    for topic, payload, _ in list(listener.seen):
                        last[topic] = payload
                    if all(last.get(f"{prefix}modems/{w.modem_id}/state", {}).get("online") for w in mine):
                        online[node] = time.monotonic() - restored
            time.sleep(0.1)
        time.sleep(60)
        load.stopping.set()
        load.join(10)
        cpu1, pss = centre_usage(pg, centre_pids)
        elapsed = time.monotonic() - t0

        # Settle: every outbound message delivered, every inbound SMS recorded.
        def pending() -> int:
            with Session() as s:
                return s.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.direction == "outbound", Message.status.in_(("queued", "sending", "sent")))
                )

        settle_deadline = time.monotonic() + args.settle
        while pending() and time.monotonic() < settle_deadline:
            time.sleep(2)
        time.sleep(5)  # the last inbound SMS read off the SIMs

        transmitted = collections.Counter(r["text"] for _, w in workers for r in w.sent())
        with Session() as s:
            states = dict(s.execute(select(Message.id, Message.status).where(Message.direction == "outbound")).all())
            inbound = collections.Counter(s.scalars(select(Message.message).where(Message.direction == "inbound")))
        in_flight = ("queued", "sending", "sent")
        lost_out = [t for i, t in load.queued.items() if states.get(i, "missing") not in ("delivered", *in_flight)]
        undrained = [t for i, t in load.queued.items() if states.get(i) in in_flight]
        lost_in = [t for t in load.injected if inbound[t] == 0]
        dup_out = [t for t in load.queued.values() if transmitted[t] > 1]
        dup_in = [t for t in load.injected if inbound[t] > 1]
        unknown = [t for i, t in load.queued.items() if states.get(i) == "unknown"]
        sent_total = sum(transmitted[t] for t in load.queued.values())
        with Session() as s:
            final_sim = dict(
                s.execute(select(Message.id, Message.sim_card_id).where(Message.direction == "outbound")).all()
            )
        moved = sum(1 for i, sim in load.intended.items() if final_sim.get(i) != sim)

        centre_parts = "Postgres, Mosquitto" + ("" if pipeline is None else ", pipeline")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores)")
        for node in cut:
            r, o = resume.get(node), online.get(node)
            print(
                f"node {node} (cut {args.partition:.0f} s): next send {r:.1f} s after the link returned, "
                f"every modem online at the centre after {o:.1f} s"
                if r is not None and o is not None
                else f"node {node}: next send {r} s, online {o} s (None: not within 120 s)"
            )
        print(
            f"centre ({centre_parts}) over {elapsed:.0f} s: CPU {100 * (cpu1 - cpu0) / elapsed:.1f} % of one "
            f"core, {100 * (cpu1 - cpu0) / elapsed * 100 / modems:.1f} % per 100 modems; PSS {pss:.0f} MB, "
            f"{pss * 100 / modems:.0f} MB per 100 modems"
        )
        print(f"sent {sent_total} messages in {elapsed:.0f} s ({sent_total / elapsed:.1f}/s) over {modems} modems")
        print(f"moved by the centre's sweeper to another SIM: {moved}")
        print("outbound by state:", dict(collections.Counter(states.get(i, "missing") for i in load.queued)))
        print(
            f"outbound {len(load.queued)}: lost {len(lost_out)}, duplicated {len(dup_out)}, unknown {len(unknown)}, "
            f"not drained within --settle {len(undrained)}; "
            f"inbound {len(load.injected)}: lost {len(lost_in)}, duplicated {len(dup_in)}; "
            f"load errors {len(load.errors)}"
        )
        for t in (lost_out + lost_in + dup_out + dup_in)[:10]:
            print("  ", t)
        for e in load.errors[:5]:
            print("  ", e)
        ok = not (lost_out or lost_in or dup_out or dup_in or undrained) and len(resume) == len(cut)
        print("fleet:", "ok" if ok else "FAILED")
        engine.dispose()
        return 0 if ok else 1
    finally:
        if listener is not None:
            listener.close()
        if pipeline is not None:
            pipeline.terminate()
            pipeline.wait(15)
        for _, w in workers:
            try:
                w.stop()
            except Exception:
                w.kill()
        mq.close()
        pg.close()
        wan.close()
        shutil.rmtree(tls.ca.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
