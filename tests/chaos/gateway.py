"""The gateway's own processes for one scenario, run natively: the API under
gunicorn (with the pipeline's leader loops inside, as in production), and per
modem an emulator process and a worker process.

The emulator is its own process on purpose: it plays the modem hardware, so
killing the worker leaves the modem (and its ledger of every PDU that left,
tests/chaos/ledger.py) alone, as pulling a worker container leaves a USB
modem alone. Every process runs in its own session so that a kill -9 takes
its children (gunicorn's workers) with it, like a container's cgroup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests
from support.waits import wait_until

PYTHON = sys.executable


def spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill9(proc: subprocess.Popen | None) -> None:
    """SIGKILL to the process and everything in its session: no handler runs."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def terminate(proc: subprocess.Popen | None, grace: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        kill9(proc)
    except ProcessLookupError:
        pass


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return "<no log>"


@dataclass
class Modem:
    """One emulated modem (its own process, with a ledger file) and its worker."""

    index: int
    control_port: int
    run_dir: Path
    iccid: str
    number: str
    send_latency: float
    emulator: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    starts: int = 0

    @property
    def modem_id(self) -> str:
        return f"chaos{self.index}"

    @property
    def link(self) -> Path:
        return self.run_dir / f"ttyCHAOS{self.index}"  # the stable /dev/serial/by-id path of a real modem

    @property
    def ledger(self) -> Path:
        return self.run_dir / f"ledger-{self.modem_id}.jsonl"

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start_emulator(self) -> None:
        self.spawn_emulator()
        self.wait_emulator()

    def spawn_emulator(self) -> None:
        cmd = [
            PYTHON,
            "-m",
            "smsgw_worker.emulator",
            "--link",
            str(self.link),
            "--control",
            f"127.0.0.1:{self.control_port}",
            "--ledger",
            str(self.ledger),
            "--storage",
            str(self.run_dir / f"sim-{self.modem_id}.json"),
            "--iccid",
            self.iccid,
            "--own-number",
            self.number,
            "--imei",
            "35" + self.iccid[-13:],
            "--imsi",
            "99901" + self.iccid[-10:],
            "--send-latency",
            str(self.send_latency),
            "--report-delay",
            "0.2",
        ]
        self.emulator = spawn(
            cmd, dict(os.environ, PYTHONUNBUFFERED="1"), self.run_dir / f"emulator-{self.modem_id}.log"
        )

    def wait_emulator(self) -> None:
        wait_until(
            lambda: self._emulator_alive() and requests.get(self.control + "/health", timeout=2).ok,
            30,
            0.1,
            f"emulator {self.modem_id} to answer",
            ignore=(requests.RequestException,),
        )

    def _emulator_alive(self) -> bool:
        assert self.emulator is not None
        if self.emulator.poll() is not None:
            raise AssertionError(f"emulator exited:\n{tail(self.run_dir / f'emulator-{self.modem_id}.log')}")
        return True

    def start_worker(self, env: dict[str, str]) -> None:
        self.starts += 1
        worker_env = dict(env, MODEM_ID=self.modem_id, MODEM_DEVICE=str(self.link))
        self.worker = spawn(
            [PYTHON, "-m", "smsgw_worker", "run"], worker_env, self.run_dir / f"worker-{self.modem_id}.log"
        )

    def post(self, path: str, body: dict | None = None) -> dict:
        resp = requests.post(self.control + path, json=body or {}, timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def kill_worker(self) -> None:
        kill9(self.worker)

    def stop(self) -> None:
        terminate(self.worker)
        terminate(self.emulator)


@dataclass
class Api:
    port: int
    run_dir: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "api.log"

    def start(self, env: dict[str, str]) -> None:
        """The production command line and config (smsgw_api/gunicorn_conf.py)."""
        self.starts += 1
        self.proc = spawn(
            [PYTHON, "-m", "gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"],
            dict(env, API_BIND=f"127.0.0.1:{self.port}", GUNICORN_WORKERS="2"),
            self.log_path,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited:\n{tail(self.log_path)}")
            return requests.get(self.base + "/healthz", timeout=2).status_code == 200

        wait_until(up, timeout, 0.2, "the API's /healthz", ignore=(requests.RequestException,))

    def kill(self) -> None:
        kill9(self.proc)

    def stop(self) -> None:
        terminate(self.proc)


@dataclass
class Gateway:
    """Everything of one scenario that is not a container."""

    env: dict[str, str]
    api: Api
    modems: list[Modem] = field(default_factory=list)

    def start(self) -> None:
        # Side by side: each Python start-up takes seconds on a loaded machine.
        self.api.start(self.env)
        for m in self.modems:
            m.spawn_emulator()
        for m in self.modems:
            m.wait_emulator()
            m.start_worker(self.env)
        self.api.wait_ready()

    def kill_all(self) -> None:
        """Power cut: every process at once, modems included."""
        procs = [self.api.proc] + [p for m in self.modems for p in (m.worker, m.emulator)]
        for p in procs:
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            if p is not None:
                p.wait(10)

    def stop(self) -> None:
        self.api.stop()
        for m in self.modems:
            m.stop()
