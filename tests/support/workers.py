"""Modem workers on emulated modems, each its own process
(tests/pipeline/emulated_worker.py) with its own SIM identity and the
emulator's control API on a port of its own."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from smsgw_common.models import Modem, SimCard

from .processes import ServiceProcess, free_port

WORKER_SCRIPT = Path(__file__).resolve().parents[1] / "pipeline" / "emulated_worker.py"
# Short timers keep the suite fast; production defaults are in docs.
WORKER_FAST = {
    "WORKER_CLAIM_INTERVAL": "0.3",
    "WORKER_REFRESH_INTERVAL": "1",
    "WORKER_SWEEP_INTERVAL": "1",
    "WORKER_RETRY_BASE": "0.2",
    "WORKER_RETRY_MAX": "1",
    "WORKER_RECONNECT_MIN": "0.2",
    "WORKER_RECONNECT_MAX": "1",
    "MODEM_COMMAND_TIMEOUT": "2",
    "MODEM_SEND_TIMEOUT": "10",
    "MQTT_KEEPALIVE": "5",
}


@dataclass
class EmulatedWorker:
    modem_id: str
    iccid: str
    number: str
    control: str
    service: ServiceProcess
    sim_id: int | None = None

    @property
    def proc(self):
        return self.service.proc

    @property
    def log_path(self) -> Path:
        return self.service.log_path

    def sent(self) -> list[dict]:
        return requests.get(self.control + "/sent", timeout=5).json()

    def inject(self, sender: str, text: str) -> None:
        resp = requests.post(self.control + "/inject", json={"sender": sender, "text": text}, timeout=5)
        assert resp.status_code == 200, resp.text

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        self.service.stop()


def launch_worker(
    env: dict,
    python: str,
    log_dir: Path,
    send_latency: float = 0.0,
    *,
    fast: bool = True,
    host: str = "127.0.0.1",
    wrap: Callable[[list[str]], list[str]] = list,
    modem_id: str | None = None,
    **extra,
) -> EmulatedWorker:
    """`fast`: the suite's short timers (else production defaults); `host`
    and `wrap`: the control server's address and a wrapper of the command,
    for a worker in a test WAN's namespace (support/wan.py); `modem_id`: a
    given one (an edge node's), else a fresh one."""
    modem_id = modem_id or f"emu{secrets.token_hex(3)}"
    iccid = "8999" + "".join(str(secrets.randbelow(10)) for _ in range(15))
    number = "+1555" + "".join(str(secrets.randbelow(10)) for _ in range(7))
    port = free_port()
    worker_env = dict(
        env,
        **(WORKER_FAST if fast else {}),
        MODEM_ID=modem_id,
        EMU_ICCID=iccid,
        EMU_NUMBER=number,
        EMU_CONTROL_HOST=host,
        EMU_CONTROL_PORT=str(port),
        EMU_SEND_LATENCY=str(send_latency),
        EMU_REPORT_DELAY="0.1",
        JOURNAL_DIR=str(log_dir / f"journal-{modem_id}"),
        **{k: str(v) for k, v in extra.items()},
    )
    service = ServiceProcess(wrap([python, str(WORKER_SCRIPT)]), worker_env, log_dir / f"{modem_id}.log")
    return EmulatedWorker(modem_id, iccid, number, f"http://{host}:{port}", service)


def wait_worker_ready(worker: EmulatedWorker, db_session, timeout: float = 20) -> None:
    """Registered: its SIM row exists and its modem is online."""

    def registered():
        with db_session() as s:
            row = (
                s.query(SimCard, Modem.online)
                .join(Modem, Modem.id == SimCard.modem_id)
                .filter(SimCard.iccid == worker.iccid)
                .first()
            )
            return row is not None and row[1] and row[0].id

    worker.sim_id = worker.service.wait_ready(registered, timeout, f"worker {worker.modem_id} to register")


class WorkerThread:
    """The real worker (smsgw_worker.worker.Worker) in a thread of this
    process, on an emulator's device: for tests that reach into both."""

    def __init__(self, settings, device: str, name: str = "test-worker"):
        from smsgw_worker.worker import Worker

        self.worker = Worker(settings, device=device)
        self.thread = threading.Thread(target=self.worker.run, name=name, daemon=True)

    def start(self, timeout: float = 15.0):
        self.thread.start()
        assert self.worker.started.wait(timeout), f"the worker did not come up within {timeout} s"
        return self.worker

    def stop(self, timeout: float = 15.0) -> None:
        self.worker.stop()
        if self.thread.ident is None:  # never started
            return
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the worker did not stop within {timeout} s"
