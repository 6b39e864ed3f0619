"""A board worker's settings (MODEM_TRANSPORT=seed-mqtt), from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from smsgw_common.settings import CommonSettings, SettingsError, env_float, env_int, env_str, env_value
from smsgw_common.topics import check_id

from .protocol import digits


@dataclass(frozen=True)
class BoardSettings:
    common: CommonSettings
    modem_id: str
    number: str  # the board's SIM in E.164, "+" and digits
    topic_root: str = ""  # prepended to the seed's topics as they stand
    # A handed-over message with no status after this long becomes `unknown`.
    status_timeout: float = 120.0
    # That many such silences in a row take the board offline.
    offline_after: int = 3
    # While offline, one message is handed over this often to see whether
    # the board is back (a board of the seed says nothing unless asked).
    probe_interval: float = 300.0
    claim_interval: float = 2.0
    sweep_interval: float = 30.0
    state_interval: float = 30.0
    # Added to status_timeout for the lease, so that while this worker lives
    # it, not a sweeper, settles a silent board's messages.
    lease_grace: float = 300.0
    claim_batch: int = 10
    report_timeout: float = 48 * 3600.0
    heartbeat_file: str = ""

    @property
    def worker_id(self) -> str:
        return f"{self.modem_id}@{socket.gethostname()}"[:64]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BoardSettings:
        environ = os.environ if environ is None else environ
        raw = env_str("BOARD_NUMBER", None, environ)
        number = "+" + digits(raw)
        if not 6 <= len(number) - 1 <= 15:
            raise SettingsError(f"BOARD_NUMBER must be the SIM's number in E.164 (+ and 6 to 15 digits): {raw!r}")
        # The broker's ACL gives the user board-<number> that board's send
        # topic (mosquitto/boards.sh): the id is the number, nothing else.
        modem_id = check_id(f"board-{number[1:]}")
        given = env_value("MODEM_ID", environ)
        if given is not None and given != modem_id:
            raise SettingsError(f"MODEM_ID of the board {number} must be {modem_id} (or unset), got {given!r}")
        root = env_value("BOARD_TOPIC_ROOT", environ) or ""
        if any(ch in root for ch in "+#\x00"):
            raise SettingsError("BOARD_TOPIC_ROOT must not contain MQTT wildcards")

        def positive(name: str, default: float) -> float:
            value = env_float(name, default, environ)
            if value <= 0:
                raise SettingsError(f"{name} must be greater than 0")
            return value

        offline_after = env_int("BOARD_OFFLINE_AFTER", 3, environ)
        if offline_after < 1:
            raise SettingsError("BOARD_OFFLINE_AFTER must be at least 1")
        return cls(
            common=CommonSettings.from_env("modem-worker", environ),
            modem_id=modem_id,
            number=number,
            topic_root=root,
            status_timeout=positive("BOARD_STATUS_TIMEOUT", 120.0),
            offline_after=offline_after,
            probe_interval=positive("BOARD_PROBE_INTERVAL", 300.0),
            claim_interval=positive("WORKER_CLAIM_INTERVAL", 2.0),
            sweep_interval=positive("WORKER_SWEEP_INTERVAL", 30.0),
            state_interval=positive("WORKER_REFRESH_INTERVAL", 30.0),
            lease_grace=positive("WORKER_LEASE_SECONDS", 300.0),
            claim_batch=max(1, env_int("WORKER_CLAIM_BATCH", 10, environ)),
            report_timeout=positive("WORKER_REPORT_TIMEOUT", 48 * 3600.0),
            heartbeat_file=environ.get("WORKER_HEARTBEAT_FILE", ""),
        )
