"""Worker settings from the environment (smsgw_common.settings helpers)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from smsgw_common.settings import (
    CommonSettings,
    SettingsError,
    env_bool,
    env_float,
    env_int,
    env_secret,
    env_str,
    env_value,
)
from smsgw_common.topics import NAME, check_id


def _not_negative(name: str, value: float) -> float:
    if value < 0:
        raise SettingsError(f"{name} must not be negative (0 turns it off)")
    return value


# How the worker reaches its modem: a serial port (USB modem, or the emulator)
# or a seed board over MQTT (smsgw_worker/board, docs/boards.md).
TRANSPORTS = ("serial", "seed-mqtt")
# The worker's own state (its outcome journal): a volume in compose.
DATA_DIR = "/var/lib/smsgw-worker"


def transport_of(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    transport = env_str("MODEM_TRANSPORT", "serial", environ)
    if transport not in TRANSPORTS:
        raise SettingsError(f"MODEM_TRANSPORT must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    return transport


def journal_bound(environ: Mapping[str, str]) -> int:
    value = env_int("JOURNAL_MAX_BYTES", 64 * 1024 * 1024, environ)
    if value < 64 * 1024:
        raise SettingsError("JOURNAL_MAX_BYTES must be at least 65536 (64 KiB)")
    return value


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
    # The hard limit of one AT+CMGS after its PDU (the longest modem manuals give).
    send_timeout: float = 120.0
    # The network's time to take one segment: a modem gives up itself after
    # TR1M (at most 45 s, 3GPP TS 24.011) plus connection set-up, and says so
    # with +CMS ERROR, so a silent modem past this has stalled.
    submit_timeout: float = 60.0
    # Silence after a PDU before a bare AT asks whether the modem still
    # answers (0: never probe). A modem busy submitting queues the probe.
    send_probe_after: float = 3.0
    sim_busy_timeout: float = 30.0
    # How long init retries AT+CPMS/AT+CNMI while the modem says "SMS not
    # ready" (after that: online, the problem in last_error, retried on refresh).
    sms_ready_timeout: float = 30.0
    # AT+CSMS=1 and AT+CNMI=2,2,0,1,0: new SMS as +CMT, reports as +CDS, each
    # acknowledged with AT+CNMA once recorded (nothing left on the SIM).
    direct_delivery: bool = False
    # How often the storage is listed on a modem that takes no AT+CNMI (no
    # +CMTI ever comes): the longest an SMS waits there.
    poll_interval: float = 5.0
    # Hang up incoming calls (ATH) after recording them as missed: a voice
    # call left ringing blocks SMS on many modems until the caller gives up.
    reject_calls: bool = True
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
    # The outcome journal (worker/journal.py, docs/reliability.md): on the
    # worker's own volume, one directory per modem; past its bound the
    # worker takes no new sends rather than risk losing a fact.
    journal_dir: str = ""
    journal_max_bytes: int = 64 * 1024 * 1024
    # Where the modem is (docs/deployment.md, "Several sites"): the edge node
    # its worker runs on and the site that node serves; None on the centre.
    node: str | None = None
    site: str | None = None

    @property
    def worker_id(self) -> str:
        return f"{self.modem_id}@{socket.gethostname()}"[:64]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
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

        def place(name: str) -> str | None:
            value = env_value(name, environ)
            if value is not None and not NAME.fullmatch(value):
                raise SettingsError(f"{name} may only hold 1 to 64 letters, digits, '.', '_' and '-': {value!r}")
            return value

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
            submit_timeout=positive("MODEM_SUBMIT_TIMEOUT", 60.0),
            send_probe_after=_not_negative("MODEM_SEND_PROBE_AFTER", env_float("MODEM_SEND_PROBE_AFTER", 3.0, environ)),
            sim_busy_timeout=positive("MODEM_SIM_BUSY_TIMEOUT", 30.0),
            sms_ready_timeout=positive("MODEM_SMS_READY_TIMEOUT", 30.0),
            direct_delivery=env_bool("MODEM_DIRECT_DELIVERY", False, environ),
            poll_interval=positive("MODEM_POLL_INTERVAL", 5.0),
            reject_calls=env_bool("MODEM_REJECT_CALLS", True, environ),
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
            node=place("NODE_NAME"),
            site=place("SITE"),
            journal_dir=environ.get("JOURNAL_DIR")
            or os.path.join(env_str("WORKER_DATA_DIR", DATA_DIR, environ), modem_id),
            journal_max_bytes=journal_bound(environ),
        )


def touch_heartbeat(path: str) -> None:
    """WORKER_HEARTBEAT_FILE: touched while the loop runs (the container's
    health check reads its age); empty means none."""
    if path:
        try:
            with open(path, "a"):
                os.utime(path)
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot touch the heartbeat file %s: %s", path, exc)
