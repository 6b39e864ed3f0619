"""How fast does a modem worker send again after a modem fault?

    .venv/bin/python bench/modem_faults.py [--runs 3] [--seconds 15] [--only hang-in-send-swallow,...]

One `python -m smsgw_worker run` process with the production timeouts and
reconnect timers, MODEM_DEVICE a glob (so a modem that comes back on another
path is found), against an emulator living in this process, a scratch
database and the real Mosquitto on 127.0.0.1 (TEST_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/test). Each message is announced with
an MQTT wake-up, as the API does.

Per fault, `--runs` times: the fault starts, a message is queued while it
lasts, the fault ends (after `--seconds`; garbage is bursts for 3 s). Printed
per fault, median of the runs:

- resume: seconds from the fault's end to the next PDU the modem transmits;
- waited: seconds from the fault's end until the message queued during the
  fault left (the target is resume <= 5 s and waited <= 10 s, issue 12);
- the fate of a send in flight at the fault (sent, unknown, ...);
- the ratio of resume to the no-fault latency from queue to PDU, measured
  in the same run as the baseline, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from smsgw_common.db import make_engine, make_sessionmaker
from smsgw_common.models import Message, Modem, SimCard, utcnow
from smsgw_common.schemas import OutboxWakeup
from smsgw_common.topics import Topics
from smsgw_worker.emulator import Emulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from shared_fixtures import create_database, drop_database

FAULTS = (
    "hang-in-send-late",
    "hang-in-send-swallow",
    "hang-idle-late",
    "hang-idle-swallow",
    "unplug-same-path",
    "unplug-other-path",
    "garbage",
)
GARBAGE_SECONDS = 3.0


def wait(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")


class Bench:
    def __init__(self, url: str, workdir: Path):
        self.engine = make_engine(url, pool_size=2)
        self.Session = make_sessionmaker(self.engine)
        self.modem_id = f"bench-faults-{secrets.token_hex(3)}"
        self.topics = Topics(f"smsgw-bench-{secrets.token_hex(3)}/")
        self.paths = [str(workdir / "ttyUSB0"), str(workdir / "ttyUSB1")]
        self.emu = Emulator(
            "generic", link=self.paths[0], iccid="8999000000000000077", own_number="+15550000077", report_delay=0.2
        ).start()
        self.mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{secrets.token_hex(4)}")
        self.mqtt.connect("127.0.0.1", 1883)
        self.mqtt.loop_start()
        self.log = open(workdir / "worker.log", "w")  # noqa: SIM115  (closed in close())
        env = dict(
            os.environ,
            DATABASE_URL=url,
            MODEM_ID=self.modem_id,
            MODEM_DEVICE=str(workdir / "ttyUSB*"),
            MQTT_HOST="127.0.0.1",
            MQTT_PREFIX=self.topics.prefix,
            LOG_LEVEL="WARNING",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smsgw_worker", "run"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.sim_id = int(wait(self._online, 60, "the worker to come online"))  # type: ignore[arg-type]
        self.n = 0

    def _online(self) -> int | None:
        with self.Session() as s:
            row = s.get(Modem, self.modem_id)
            if row is None or not row.online:
                return None
            return s.scalar(select(SimCard.id).where(SimCard.modem_id == self.modem_id))

    def queue(self, label: str) -> tuple[int, str]:
        self.n += 1
        text = f"{label} #{self.n} {secrets.token_hex(3)}"
        with self.Session.begin() as s:
            msg = Message(
                direction="outbound",
                recipient="+15550001111",
                message=text,
                status="queued",
                sim_card_id=self.sim_id,
                queued_at=utcnow(),
            )
            s.add(msg)
            s.flush()
            mid = msg.id
        self.mqtt.publish(self.topics.outbox(self.modem_id), OutboxWakeup(message_id=mid).to_json(), qos=1)
        return mid, text

    def sent_at(self, text: str, timeout: float) -> float:
        def find() -> float | None:
            return next((x["at"] for x in list(self.emu.sent) if x["text"] == text), None)

        return float(wait(find, timeout, f"{text!r} to leave"))  # type: ignore[arg-type]

    def status(self, mid: int) -> str:
        with self.Session() as s:
            msg = s.get(Message, mid)
            return msg.status if msg is not None else "?"

    def settle_state(self, mid: int, timeout: float = 30) -> str:
        wait(lambda: self.status(mid) not in ("queued", "sending"), timeout, f"message {mid} to settle")
        return self.status(mid)

    def baseline(self) -> float:
        queued = time.time()
        _, text = self.queue("baseline")
        return self.sent_at(text, 30) - queued

    def run_fault(self, fault: str, seconds: float) -> dict[str, object]:
        emu, in_flight = self.emu, None
        if fault.startswith("hang-in-send"):
            emu.hang_on_next_send(seconds, fault.rsplit("-", 1)[1])
            in_flight = self.queue("in flight")
            wait(lambda: emu.fault_log and emu.fault_log[-1]["event"] == "start", 10, "the hang to start")
            _, text = self.queue("during")
            end = float(wait(lambda: self._ended("hang"), seconds + 10, "the hang to end"))  # type: ignore[arg-type]
        elif fault.startswith("hang-idle"):
            emu.hang_for(seconds, fault.rsplit("-", 1)[1])
            _, text = self.queue("during")
            end = float(wait(lambda: self._ended("hang"), seconds + 10, "the hang to end"))  # type: ignore[arg-type]
        elif fault.startswith("unplug"):
            emu.unplug()
            _, text = self.queue("during")
            time.sleep(seconds)
            if fault == "unplug-other-path":
                self.paths.reverse()
            emu.replug(self.paths[0])
            end = time.time()
        else:
            _, text = self.queue("during")
            stop = time.monotonic() + GARBAGE_SECONDS
            while time.monotonic() < stop:  # bounded: about 30 bursts
                emu.emit_garbage(48)
                time.sleep(0.1)
            end = time.time()
        left = self.sent_at(text, 120)
        after = [x["at"] for x in list(emu.sent) if x["at"] >= end]
        if not after:
            # Everything left during the fault (garbage): the next send tells.
            _, probe = self.queue("after")
            after = [self.sent_at(probe, 60)]
        result: dict[str, object] = {"resume": min(after) - end, "waited": max(0.0, left - end)}
        if in_flight is not None:
            result["in_flight"] = self.settle_state(in_flight[0])
        return result

    def _ended(self, fault: str) -> float | None:
        log = self.emu.fault_log
        last = log[-1] if log else None
        return last["at"] if last and last["fault"] == fault and last["event"] == "end" else None

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.mqtt.loop_stop()
        self.mqtt.disconnect()
        self.emu.stop()
        self.engine.dispose()
        self.log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long a hang or an unplug lasts")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(FAULTS)}")
    args = parser.parse_args()
    faults = [f for f in args.only.split(",") if f] or list(FAULTS)
    unknown = set(faults) - set(FAULTS)
    if unknown or not 1 <= args.runs <= 20 or not 1 <= args.seconds <= 120:
        parser.error(f"unknown faults {sorted(unknown)}" if unknown else "--runs 1..20, --seconds 1..120")

    name = f"smsgw_bench_{secrets.token_hex(4)}"
    url = create_database(name)
    bench = None
    load_before = os.getloadavg()
    try:
        from smsgw_api.migrate import upgrade

        upgrade(url)
        with tempfile.TemporaryDirectory(prefix="modem-faults-") as tmp:
            bench = Bench(url, Path(tmp))
            bench.baseline()  # warm-up: connections, first claim
            print(f"{'fault':22} {'resume s':>9} {'waited s':>9} {'baseline s':>10} {'ratio':>6}  in flight / runs")
            for fault in faults:
                rows, bases = [], []
                for _ in range(args.runs):
                    bases.append(bench.baseline())
                    rows.append(bench.run_fault(fault, args.seconds))
                    time.sleep(1.0)  # let the reports of this run settle
                resume = statistics.median(float(r["resume"]) for r in rows)  # type: ignore[arg-type]
                waited = statistics.median(float(r["waited"]) for r in rows)  # type: ignore[arg-type]
                base = statistics.median(bases)
                fates = ",".join(str(r["in_flight"]) for r in rows if "in_flight" in r) or "-"
                print(
                    f"{fault:22} {resume:9.2f} {waited:9.2f} {base:10.3f} {resume / base:6.0f}x  "
                    f"{fates} / {args.runs}  (max resume {max(float(r['resume']) for r in rows):.2f})",  # type: ignore[arg-type]
                    flush=True,
                )
            load_after = os.getloadavg()
            print(f"fault length {args.seconds:g} s (garbage {GARBAGE_SECONDS:g} s), runs {args.runs}")
            print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
            print("worker log:", Path(tmp) / "worker.log", "(removed on exit)")
        return 0
    finally:
        if bench is not None:
            bench.close()
        drop_database(name)


if __name__ == "__main__":
    sys.exit(main())
