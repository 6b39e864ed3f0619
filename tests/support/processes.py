"""Service processes a test starts: the API under gunicorn, workers,
emulators. Each has a log file, a bounded start-up (ready when a check
passes; failed at once, with the log's tail, when the process exits) and a
clean stop (SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import requests

from .waits import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class ServiceProcess:
    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, cwd: str | Path | None = None):
        self.log_path = log_path
        # The child keeps its own copy of the descriptor.
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.proc.args[:3]} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        return True

    def wait_ready(self, check: Callable[[], object], timeout: float, what: str) -> object:
        """Wait for `check` while the process lives; connection errors are "not yet"."""
        return wait_until(
            lambda: self.alive() and check(),
            timeout,
            0.2,
            lambda: f"{what}\n{self.log()[-3000:]}",
            ignore=(requests.RequestException, OSError),
        )

    def stop(self, grace: float = 10.0) -> None:
        stop_process(self.proc, grace)


def healthz(base: str) -> Callable[[], bool]:
    return lambda: requests.get(base + "/healthz", timeout=2).status_code == 200


def start_http_service(
    cmd: list[str], env: dict[str, str], log_path: Path, *, timeout: float = 40.0, cwd: str | Path | None = None
) -> tuple[ServiceProcess, str, int]:
    """Start a service that serves HTTP on API_BIND and wait for /healthz.

    Returns the process, its base URL and its port."""
    port = free_port()
    proc = ServiceProcess(cmd, dict(env, API_BIND=f"127.0.0.1:{port}"), log_path, cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        proc.wait_ready(healthz(base), timeout, f"{base}/healthz to answer 200")
    except BaseException:
        proc.stop()
        raise
    return proc, base, port
