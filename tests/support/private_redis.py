"""A redis-server of the test's own, which the test may kill and start again.

The machine's shared Redis is never stopped: a test that takes Redis away
starts this one on a port of its private range (SMSGW_TEST_PORTS, "low-high",
default 25600-25699), without persistence (a restart comes back empty, as
the compose stack's Redis does), and stops it at the end.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis as redis_lib

from .ports import free_port
from .waits import wait_until


class PrivateRedis:
    def __init__(self, port: int | None = None):
        self.port = port or free_port("25600-25699")
        self.dir = Path(tempfile.mkdtemp(prefix="smsgw-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                # Persistence off: a killed Redis comes back empty.
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis_lib.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            wait_until(client.ping, timeout, 0.05, f"redis-server on port {self.port}", ignore=(redis_lib.RedisError,))
        finally:
            client.close()
        return self

    def kill(self) -> None:
        """kill -9: no goodbye to its clients' sockets beyond the kernel's reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
