"""Gammu, an AT client nobody here wrote, drives the emulator successfully.

Where Gammu and the emulator disagree, the emulator is what changes.
"""

import shutil
import subprocess

import pytest

from smsgw_worker.emulator import Emulator

GAMMU = shutil.which("gammu") or "/usr/bin/gammu"


def gammu(rc, *args, timeout=60):
    return subprocess.run([GAMMU, "-c", str(rc), *args], capture_output=True, text=True, timeout=timeout)


def start(profile, tmp_path):
    emu = Emulator(profile, link=str(tmp_path / "ttyGAMMU")).start()
    rc = tmp_path / "gammurc"
    rc.write_text(f"[gammu]\ndevice = {emu.device}\nconnection = at\n")
    return rc, emu


# Gammu takes a few seconds per run, so the vendor profile gets one round.
@pytest.fixture
def gammurc(tmp_path):
    with Emulator("generic", link=str(tmp_path / "ttyGAMMU")) as emu:
        rc = tmp_path / "gammurc"
        rc.write_text(f"[gammu]\ndevice = {emu.device}\nconnection = at\n")
        yield rc, emu


def test_gammu_identifies_the_emulated_modem(gammurc):
    rc, emu = gammurc
    result = gammu(rc, "identify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert emu.profile.manufacturer.lower() in result.stdout.lower()
    assert emu.imei in result.stdout
    assert emu.imsi in result.stdout


def test_gammu_sends_an_sms_and_the_emulator_records_exactly_that(gammurc):
    rc, emu = gammurc
    text = "Hello from Gammu, 100% [real] €"
    result = gammu(rc, "sendsms", "TEXT", "+15550001111", "-text", text)
    assert result.returncode == 0, result.stdout + result.stderr
    [rec] = emu.wait_sent(1, timeout=5)
    assert (rec["number"], rec["text"], rec["encoding"]) == ("+15550001111", text, "GSM-7")
    assert "message reference=0" in result.stdout


def test_gammu_sends_unicode_as_ucs2(gammurc):
    rc, emu = gammurc
    text = "Привет, мир"
    result = gammu(rc, "sendsms", "TEXT", "+15550001111", "-unicode", "-text", text)
    assert result.returncode == 0, result.stdout + result.stderr
    [rec] = emu.wait_sent(1, timeout=5)
    assert (rec["text"], rec["encoding"]) == (text, "UCS-2")


def test_gammu_works_with_the_huawei_profile_and_its_quirks(tmp_path):
    rc, emu = start("huawei", tmp_path)
    try:
        result = gammu(rc, "sendsms", "TEXT", "+15550001111", "-text", "hi huawei")
        assert result.returncode == 0, result.stdout + result.stderr
        assert [r["text"] for r in emu.wait_sent(1, timeout=5)] == ["hi huawei"]
        # Gammu probes AT+MODE=2, which this profile answers COMMAND NOT SUPPORT.
        assert "AT+MODE=2" in emu.commands
    finally:
        emu.stop()
