"""Fixtures for the modem worker tests: an emulated modem behind a real pty."""

from __future__ import annotations

import pytest
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
from support.modems import AtPort

from smsgw_worker.emulator import Emulator

__all__ = ["AtPort"]


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

    def make(**kw) -> Rig:
        kw.setdefault("link", str(tmp_path / f"ttyRIG{len(made)}"))
        r = Rig(database_url, mqtt_prefix, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
