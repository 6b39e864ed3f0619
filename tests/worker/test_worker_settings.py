"""Worker settings from the environment."""

from __future__ import annotations

import pytest

from smsgw_common.settings import SettingsError
from smsgw_worker.settings import WorkerSettings

BASE = {"MODEM_ID": "usb0", "MODEM_DEVICE": "/dev/ttyUSB2", "DATABASE_URL": "postgresql://x@127.0.0.1/db"}


def test_it_reads_the_pin_from_a_secret_file(tmp_path):
    secret = tmp_path / "pin"
    secret.write_text("0000\n")
    s = WorkerSettings.from_env({**BASE, "MODEM_PIN_FILE": str(secret)})
    assert s.pin == "0000"


def test_it_says_which_pin_file_cannot_be_read(tmp_path):
    with pytest.raises(SettingsError, match=r"MODEM_PIN_FILE=.*cannot be read"):
        WorkerSettings.from_env({**BASE, "MODEM_PIN_FILE": str(tmp_path / "missing")})


def test_defaults_suit_a_real_modem_and_timers_can_be_shortened():
    s = WorkerSettings.from_env(BASE)
    assert (s.send_timeout, s.claim_interval, s.lease_seconds, s.pin) == (120.0, 2.0, 300.0, None)
    fast = WorkerSettings.from_env({**BASE, "WORKER_CLAIM_INTERVAL": "0.2", "MODEM_SEND_TIMEOUT": "5"})
    assert (fast.claim_interval, fast.send_timeout) == (0.2, 5.0)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"WORKER_CLAIM_INTERVAL": "0"}, "WORKER_CLAIM_INTERVAL must be greater than 0"),
        ({"MODEM_SEND_TIMEOUT": "soon"}, "MODEM_SEND_TIMEOUT must be a number"),
    ],
)
def test_bad_numbers_are_refused_with_the_setting_named(extra, message):
    with pytest.raises(SettingsError, match=message):
        WorkerSettings.from_env({**BASE, **extra})


def test_an_emulated_modem_needs_no_device():
    assert WorkerSettings.from_env({**BASE, "MODEM_DEVICE": "", "MODEM_EMULATOR": "quectel"}).emulator == "quectel"


def test_an_edge_node_names_itself_and_its_site_and_a_bad_name_is_refused():
    s = WorkerSettings.from_env({**BASE, "NODE_NAME": "berlin-1", "SITE": "de"})
    assert (s.node, s.site) == ("berlin-1", "de")
    assert (WorkerSettings.from_env(BASE).node, WorkerSettings.from_env(BASE).site) == (None, None)
    for name, value in (("NODE_NAME", "berlin 1"), ("SITE", "de/<b>"), ("NODE_NAME", "n" * 65)):
        with pytest.raises(SettingsError, match=f"{name} may only hold 1 to 64 letters"):
            WorkerSettings.from_env({**BASE, name: value})
