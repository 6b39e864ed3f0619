"""A demo or soak modem sends for months: the emulator's records of what it
did stay bounded, and still count everything."""

import pytest
from support.waits import wait_until

from smsgw_worker.emulator import Emulator
from smsgw_worker.emulator.state import Recent

from .conftest import AtPort
from .test_emulator import send


@pytest.fixture
def small_emulator(tmp_path):
    emu = Emulator("generic", link=str(tmp_path / "ttyEMU0"), report_delay=0.05, keep=3)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def test_it_keeps_the_last_sends_reports_and_commands_but_counts_them_all(small_emulator):
    at = AtPort(small_emulator.device)
    try:
        at.cmd("ATE0")
        at.drain(0.05)
        for i in range(7):
            assert send(at, "+15550001111", f"number {i}")[0][-1] == "OK"
        wait_until(lambda: small_emulator.reports.total == 7, 5)
    finally:
        at.close()

    assert [s["text"] for s in small_emulator.sent] == ["number 4", "number 5", "number 6"]
    assert small_emulator.sent.total == 7
    assert len(small_emulator.reports) == 3
    assert len(small_emulator.commands) == 3 and small_emulator.commands.total >= 8
    # Waiting counts every send, not only the ones kept.
    assert [s["text"] for s in small_emulator.wait_sent(7, timeout=1)] == ["number 4", "number 5", "number 6"]


def test_a_record_never_holds_more_than_it_keeps():
    record = Recent(keep=2)
    for i in range(1000):
        record.append(i)
        assert len(record) <= 2
    assert record == [998, 999] and record.total == 1000
    record.clear()
    assert record == [] and record.total == 0


def test_a_record_must_keep_something():
    with pytest.raises(ValueError, match="keep must be at least 1"):
        Recent(keep=0)
