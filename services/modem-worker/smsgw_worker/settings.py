"""Worker settings from the environment (smsgw_common.settings helpers)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from smsgw_common.settings import (
    CommonSettings, SettingsError, env_bool, env_float, env_int, env_secret, env_str,
)
from smsgw_common.topics import check_id


@dataclass(frozen=True)
class WorkerSettings:
    common: CommonSettings
    modem_id: str
    device: str | None
    pin: str | None
    profile: str  # a hint only: the driver tolerates every known quirk anyway
    emulator: str | None  # run an in-process emulator of this profile (demo)
    emulator_control: str | None  # host:port of its control server
    baudrate: int = 115200
    command_timeout: float = 10.0
    send_timeout: float = 120.0
    sim_busy_timeout: float = 30.0
    # How long init retries AT+CPMS/AT+CNMI while the modem says "SMS not
    # ready" (after that: online, the problem in last_error, retried on refresh).
    sms_ready_timeout: float = 30.0
    # AT+CSMS=1 and AT+CNMI=2,2,0,1,0: new SMS as +CMT, reports as +CDS, each
    # acknowledged with AT+CNMA once recorded (nothing left on the SIM).
    direct_delivery: bool = False
    claim_interval: float = 2.0
    refresh_interval: float = 30.0
    sweep_interval: float = 30.0
    lease_seconds: float = 300.0
    max_attempts: int = 5
    retry_base: float = 30.0
    retry_max: float = 3600.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    report_timeout: float = 48 * 3600.0
    claim_batch: int = 10
    inbound_part_timeout: float = 24 * 3600.0
    # How long the parts of a completed concatenated SMS are remembered, so
    # that one delivered again (by the SMSC, or left on the SIM) is dropped.
    inbound_duplicate_window: float = 24 * 3600.0
    # Touched by the worker loop, so a container health check can tell a
    # working loop from a hung one (empty: none).
    heartbeat_file: str = ""

    @property
    def worker_id(self) -> str:
        return f"{self.modem_id}@{socket.gethostname()}"[:64]

    @classmethod
    def from_env(cls, environ=None) -> "WorkerSettings":
        environ = os.environ if environ is None else environ
        modem_id = env_str("MODEM_ID", None, environ)
        try:
            check_id(modem_id)
        except ValueError:
            raise SettingsError(f"MODEM_ID may only hold letters, digits, '.', '_' and '-': {modem_id!r}") from None
        emulator = environ.get("MODEM_EMULATOR") or None
        if emulator:
            # Imported only here: a worker on real hardware never loads the emulator.
            from .emulator.profiles import PROFILES

            if emulator not in PROFILES:
                raise SettingsError(f"MODEM_EMULATOR must be one of {', '.join(PROFILES)}, got {emulator!r}")
        device = environ.get("MODEM_DEVICE") or None
        if not device and not emulator:
            raise SettingsError("MODEM_DEVICE is not set (e.g. /dev/serial/by-id/usb-...-if02-port0)")
        # A PIN is not a placeholder-checked secret (0000 is a real factory PIN).
        pin = environ.get("MODEM_PIN") or None
        if pin is None and environ.get("MODEM_PIN_FILE"):
            pin = env_secret("MODEM_PIN", environ, required=False)
        if pin is not None and not (pin.isdigit() and 4 <= len(pin) <= 8):
            raise SettingsError("MODEM_PIN must be 4 to 8 digits")

        def positive(name: str, default: float) -> float:
            value = env_float(name, default, environ)
            if value <= 0:
                raise SettingsError(f"{name} must be greater than 0")
            return value

        return cls(
            common=CommonSettings.from_env("modem-worker", environ),
            modem_id=modem_id,
            device=device,
            pin=pin,
            profile=env_str("MODEM_PROFILE", "generic", environ),
            emulator=emulator,
            emulator_control=environ.get("MODEM_EMULATOR_CONTROL") or None,
            baudrate=env_int("MODEM_BAUDRATE", 115200, environ),
            command_timeout=positive("MODEM_COMMAND_TIMEOUT", 10.0),
            send_timeout=positive("MODEM_SEND_TIMEOUT", 120.0),
            sim_busy_timeout=positive("MODEM_SIM_BUSY_TIMEOUT", 30.0),
            sms_ready_timeout=positive("MODEM_SMS_READY_TIMEOUT", 30.0),
            direct_delivery=env_bool("MODEM_DIRECT_DELIVERY", False, environ),
            claim_interval=positive("WORKER_CLAIM_INTERVAL", 2.0),
            refresh_interval=positive("WORKER_REFRESH_INTERVAL", 30.0),
            sweep_interval=positive("WORKER_SWEEP_INTERVAL", 30.0),
            lease_seconds=positive("WORKER_LEASE_SECONDS", 300.0),
            max_attempts=env_int("WORKER_MAX_ATTEMPTS", 5, environ),
            retry_base=positive("WORKER_RETRY_BASE", 30.0),
            retry_max=positive("WORKER_RETRY_MAX", 3600.0),
            reconnect_min=positive("WORKER_RECONNECT_MIN", 1.0),
            reconnect_max=positive("WORKER_RECONNECT_MAX", 60.0),
            report_timeout=positive("WORKER_REPORT_TIMEOUT", 48 * 3600.0),
            claim_batch=env_int("WORKER_CLAIM_BATCH", 10, environ),
            inbound_part_timeout=positive("WORKER_INBOUND_PART_TIMEOUT", 24 * 3600.0),
            inbound_duplicate_window=positive("WORKER_INBOUND_DUPLICATE_WINDOW", 24 * 3600.0),
            heartbeat_file=environ.get("WORKER_HEARTBEAT_FILE", ""),
        )
