"""Fixtures for the modem worker tests: an emulated modem behind a real pty."""
from __future__ import annotations

from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
import re
import time

import pytest
import serial

from smsgw_worker.emulator import Emulator


@pytest.fixture
def emulator(tmp_path):
    """A started generic-profile emulator; its `device` is a stable symlink
    (like /dev/serial/by-id/...) so unplug/replug keep the same path."""
    emu = Emulator("generic", link=str(tmp_path / "ttyEMU0"), report_delay=0.1)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


class AtPort:
    """A bare AT client for emulator tests: writes a line, reads until a final result."""

    FINALS = ("OK", "ERROR", "COMMAND NOT SUPPORT", "+CME ERROR:", "+CMS ERROR:")

    def __init__(self, device: str):
        self.port = serial.Serial(device, 115200, timeout=0.02)

    def close(self) -> None:
        self.port.close()

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read_until(self, predicate, timeout: float = 2.0) -> str:
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            buf += self.port.read(4096)
            if predicate(buf.decode("latin-1")):
                return buf.decode("latin-1")
        raise TimeoutError(f"no match within {timeout} s; got {buf!r}")

    def lines(self, text: str) -> list[str]:
        return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]

    def cmd(self, command: str, timeout: float = 2.0) -> list[str]:
        """Send one command; return the response lines, final result last."""
        self.port.write(command.encode() + b"\r")
        text = self.read_until(lambda t: self._final(t) is not None, timeout)
        return self.lines(text)

    def _final(self, text: str):
        for line in self.lines(text):
            if line in ("OK", "ERROR", "COMMAND NOT SUPPORT") or line.startswith(
                ("+CME ERROR:", "+CMS ERROR:")
            ):
                return line
        return None

    def expect(self, needle: str, timeout: float = 2.0) -> str:
        return self.read_until(lambda t: needle in t, timeout)

    def drain(self, seconds: float = 0.1) -> str:
        end = time.monotonic() + seconds
        buf = b""
        while time.monotonic() < end:
            buf += self.port.read(4096)
        return buf.decode("latin-1")


@pytest.fixture
def at(emulator):
    """An AT client on the emulator, echo off and numeric errors on."""
    port = AtPort(emulator.device)
    port.cmd("ATE0")
    port.cmd("AT+CMEE=1")
    port.drain(0.05)
    try:
        yield port
    finally:
        port.close()


@pytest.fixture
def rig(database_url, mqtt_prefix, tmp_path):
    """Workers on emulated modems with real Postgres and Mosquitto (worker_harness.Rig).

    Each emulator gets a stable symlink as its device, so unplug/replug
    (test_worker_faults.py) keep the same path."""
    from .worker_harness import Rig

    made = []

    def make(**kw) -> "Rig":
        kw.setdefault("link", str(tmp_path / f"ttyRIG{len(made)}"))
        r = Rig(database_url, mqtt_prefix, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
