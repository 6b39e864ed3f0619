# Over 500 lines on purpose: the one class that gives AT commands meaning; init, SIM, storage and USSD share its state.
"""The AT modem: gives AT commands their meaning on top of the serial link.

No database, no MQTT: unsolicited events go to `on_event` as `ModemEvent`s,
and callers get plain values or typed exceptions (errors.py).
"""

from __future__ import annotations

import csv
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from smsgw_common.segments import GSM7, UCS2

from . import pdu as pdu_codec
from .errors import (
    CmeError,
    CmsError,
    CommandError,
    ModemError,
    ModemTimeout,
    NotSupported,
    PortGone,
    SimProblem,
    SubmitUnconfirmed,
    cme_code,
)
from .serial_link import SerialLink, line_head

log = logging.getLogger(__name__)

REGISTRATION = {
    0: "not_registered",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    6: "home",
    7: "roaming",
}  # 6/7: "SMS only" variants (TS 27.007 7.2)
# Tried in order: +CMTI for new SMS with status reports stored (ds=2, "+CDSI:
# <mem>,<index>"), then routed (ds=1, "+CDS"), then buffer mode 1 for modems
# that refuse mode 2. A stored report waits on the modem until the worker has
# it in Postgres and deletes it; a routed one is gone once printed, heard or
# not (a worker killed, its port being reopened). docs/reliability.md.
CNMI_VARIANTS = ("2,1,0,2,0", "2,1,0,1,0", "1,1,0,2,0", "1,1,0,1,0", "2,1,0,0,0")
# Direct delivery (with AT+CSMS=1): +CMT and +CDS, each acknowledged by AT+CNMA.
CNMI_DIRECT = "2,2,0,1,0"
CPMS_VARIANTS = ('"SM","SM","SM"', '"ME","ME","ME"', '"SM","SM"', '"SM"')
# The `> ` prompt comes at once on every modem: a longer wait is a hang, and
# nothing was written yet, so giving up costs nothing.
PROMPT_TIMEOUT = 5.0
ICCID_COMMANDS = ("AT+CCID", "AT+ICCID", "AT^ICCID?", "AT+QCCID", "AT+CICCID", "AT+CRSM=176,12258,0,0,10")


@dataclass
class Identity:
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    imei: str | None = None
    imsi: str | None = None
    iccid: str | None = None
    number: str | None = None


@dataclass
class StoredMessage:
    index: int
    # 0 unread, 1 read, 2 unsent, 3 sent (TS 27.005 3.1); None where the
    # modem left it out (`+CMGR: ,,92`): the PDU's own type then tells.
    stat: int | None
    pdu: str


@dataclass
class ModemEvent:
    """kind: stored_sms, sms, report, stored_report, ussd, ring, caller, sim,
    storage_full, smsc_missing, registration, reboot, noise."""

    kind: str
    line: str
    pdu: str | None = None
    storage: str | None = None
    index: int | None = None
    fields: dict[str, int | str | None] = field(default_factory=dict)


class Signal(NamedTuple):
    quality: int | None  # +CSQ index: 0..31, or 99 when unknown
    dbm: int | None


class StorageUsage(NamedTuple):
    """Messages in a memory, of how many it holds (AT+CPMS?)."""

    used: int
    total: int


# A USSD answer: {"status": <+CUSD m>, "text": ..., "dcs": <data coding scheme>,
# "session_open": whether the network waits for a reply (m = 1, a menu)}.
UssdReply = dict[str, int | str | None]


@dataclass
class _UssdWaiter:
    """The +CUSD line a pending AT+CUSD waits for (the reader thread fills it in)."""

    done: threading.Event = field(default_factory=threading.Event)
    line: str | None = None


def _strip_head(line: str) -> str:
    return line.split(":", 1)[1].strip() if ":" in line and line.startswith(("+", "^", "$")) else line.strip()


def _csv(value: str) -> list[str]:
    """`1,"a,b",,3` -> ['1', 'a,b', '', '3']."""
    return [p.strip() for p in next(csv.reader([value], skipinitialspace=True), [])]


def _number(field: str) -> int | None:
    """A field of ASCII digits as an int, else None. Not str.isdigit(): the
    line is read as latin-1, where "²" is a digit to isdigit() and not to int()."""
    return int(field) if field.isascii() and field.isdigit() else None


def _cpms_usage(lines: list[str]) -> StorageUsage | None:
    """The first memory's usage in an AT+CPMS? answer."""
    for line in lines:
        if line.startswith("+CPMS:"):
            parts = _csv(_strip_head(line))
            try:
                return StorageUsage(int(parts[1]), int(parts[2]))
            except (ValueError, IndexError):
                return None
    return None


def sim_lock(exc: BaseException) -> str | None:
    """ "pin" or "puk" when an error says the SIM is locked: +CME ERROR: 11/12
    (+CMS 311/316), or their verbose texts. Some firmware answers every
    command so, bare AT included, until the PIN is entered."""
    if isinstance(exc, CmeError) and exc.code in (11, 12):
        return "pin" if exc.code == 11 else "puk"
    if isinstance(exc, CmsError) and exc.code in (311, 316):
        return "pin" if exc.code == 311 else "puk"
    if isinstance(exc, CommandError):
        text = f"{getattr(exc, 'text', '')} {exc.line}".upper()
        if "SIM PUK" in text:
            return "puk"
        if "SIM PIN" in text:
            return "pin"
    return None


def refused_for_good(exc: CommandError) -> bool:
    """A refusal that retrying will not change: a plain ERROR (with AT+CMEE=1
    on, a modem that is merely not ready says +CMS/+CME ERROR <code>), a
    vendor's "not supported", or "operation not supported" itself."""
    if isinstance(exc, CmsError):
        return exc.code == 303
    if isinstance(exc, CmeError):
        return exc.code == 4
    return True


def csq_to_dbm(index: int | None) -> int | None:
    """+CSQ rssi index to dBm (TS 27.007 8.5): 0 is -113 dBm or less, 31 is -51 or more."""
    if index is None or not 0 <= index <= 31:
        return None
    return -113 + 2 * index


def _plausible(text: str) -> bool:
    return bool(text) and all(ch.isprintable() or ch in "\r\n" for ch in text)


def decode_ussd_text(text: str, dcs: int | None) -> str:
    """The text of a +CUSD answer, as the network meant it. Modems hand it
    over as text in the TE character set, or as hex of the network's bytes:
    UCS-2 (DCS 72, or 17 after a two-octet language code) and, on some
    Huawei sticks, packed GSM 7-bit even under DCS 15. The DCS says which
    alphabet; the bytes decide whether they are hex at all."""
    if not text or dcs is None or not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", text):
        return text
    alphabet, language_prefix = pdu_codec.cbs_alphabet(dcs)
    raw = bytes.fromhex(text)
    if alphabet == UCS2:
        body = raw[2:] if language_prefix and len(raw) % 2 == 0 and len(raw) >= 2 else raw
        if len(body) % 2 == 0:
            decoded = body.decode("utf-16-be", errors="replace")
            if _plausible(decoded):
                return decoded
        return text
    if alphabet == GSM7 and not text.isdigit() and len(text) >= 8:
        # Plain digits ("100") or a short word ("CAFE") are hex-looking text,
        # not packed septets.
        try:
            decoded = pdu_codec.unpack_gsm7(raw)
        except pdu_codec.PduError:
            return text
        if language_prefix:
            decoded = decoded[3:] if decoded[2:3] == "\r" else decoded[2:]
        if _plausible(decoded):
            return decoded
    return text


class ATModem:
    def __init__(
        self,
        device: str,
        *,
        pin: str | None = None,
        baudrate: int = 115200,
        command_timeout: float = 10.0,
        send_timeout: float = 120.0,
        submit_timeout: float = 60.0,
        send_probe_after: float = 3.0,
        sim_busy_timeout: float = 30.0,
        sms_ready_timeout: float = 30.0,
        direct_delivery: bool = False,
        on_event: Callable[[ModemEvent], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ):
        self.device = device
        self.pin = pin
        self.baudrate = baudrate
        self.command_timeout = command_timeout
        self.send_timeout = send_timeout  # the hard limit of one AT+CMGS
        self.submit_timeout = submit_timeout  # the network's time for one segment
        self.send_probe_after = send_probe_after
        self.sim_busy_timeout = sim_busy_timeout
        self.sms_ready_timeout = sms_ready_timeout
        self.direct_delivery = direct_delivery
        self.on_event = on_event or (lambda event: None)
        # Lines that may mean the module restarted (RDY, ^BOOT, +CFUN: 1 ...),
        # as counted by the reader thread, and how many of them init() or
        # settings_lost() has dealt with: while they differ, the modem may be
        # booting with its settings gone, and nothing should be sent.
        self.boots_seen = 0
        self.boots_handled = 0
        self.link = SerialLink(
            device,
            baudrate=baudrate,
            on_unsolicited=self._unsolicited,
            on_fatal=on_fatal,
            default_timeout=command_timeout,
        )
        self.cnmi: str | None = None
        self.cpms = '"SM","SM","SM"'  # the storage init settled on
        self.needs_ack = False  # AT+CSMS=1: +CMT/+CDS must be acknowledged with AT+CNMA
        self.report_storage: str | None = None  # "SR" where the modem has a memory of its own for reports
        self.setup_problem: str | None = None  # what SMS setup could not do (health last_error)
        # No AT+CNMI this modem takes (Nokia N79 and other phones): no +CMTI
        # will ever come, so the worker lists the storage every poll interval.
        self.polling_only = False
        # Memories AT+CPMS refused while the main one works ("SR" on some
        # Huawei/ZTE sticks whose AT+CPMS=? lists it): never asked again on
        # this link, since every refresh would otherwise repeat the refusal.
        self.refused_storages: set[str] = set()
        self._cpms_choices: list[str] | None = None  # the first list of AT+CPMS=?, once read
        self.pin_sent = False  # AT+CPIN=<pin> goes out at most once per link
        self.clip = False  # AT+CLIP=1 accepted: +CLIP names each caller
        self._pdu_mode = self._cpms_ok = self._csms_ok = False
        self._ussd_waiter: _UssdWaiter | None = None
        self._ussd_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        self.link.open()

    def close(self) -> None:
        self.link.close()

    def cmd(self, command: str, timeout: float | None = None, accept: str | None = None) -> list[str]:
        try:
            return self.link.command(command, timeout or self.command_timeout, accept=accept)
        except CmsError as exc:
            self._notice(exc)
            raise

    def _notice(self, exc: CmsError) -> None:
        """Errors that say something about the modem, not the command: the
        worker acts on them whichever command met them."""
        if exc.code == 322:  # memory full: new SMS wait at the network, some firmware refuses to send
            self.on_event(ModemEvent("storage_full", f"+CMS ERROR: 322 on {exc.command}"))
        elif exc.code == 330:
            self.on_event(ModemEvent("smsc_missing", f"+CMS ERROR: 330 on {exc.command}"))

    def _try(self, command: str, timeout: float | None = None) -> list[str] | None:
        """A command whose failure is a quirk, not a fault (returns None on ERROR)."""
        try:
            return self.cmd(command, timeout)
        except CommandError as exc:
            log.debug("%s refused: %s", command, exc)
            return None

    def sync(self, attempts: int = 3, timeout: float | None = None) -> None:
        """Get an OK to a bare AT (drains a half-entered command or garbage)."""
        timeout = timeout or min(2.0, self.command_timeout)
        last: Exception | None = None
        for _ in range(attempts):
            try:
                self.cmd("AT", timeout)
            except ModemTimeout as exc:
                last = exc
                continue
            except CommandError as exc:
                if not sim_lock(exc):
                    # Leftover input made the modem answer ERROR; the next AT is clean.
                    last = exc
                    continue
                # It answers; it wants its PIN before anything else.
            # A modem back from a stall may still print answers to what it
            # queued meanwhile (earlier probes, a cancelled AT+CMGS): they
            # must not be taken for the answers to the next commands.
            self.link.settle()
            return
        raise last or ModemTimeout("AT", timeout)

    def init(self) -> None:
        """Bring the modem into the state the worker expects. Raises SimProblem
        when the SIM is missing or locked, ModemTimeout when it does not answer."""
        self.boots_handled = self.boots_seen
        self.sync()
        self._try("ATE0")
        self._try("AT+CMEE=1")
        self.unlock_sim()
        # Refused before the PIN went in (a locked modem refuses everything).
        self._try("ATE0")
        self._try("AT+CMEE=1")
        # Registration changes as they happen (+CREG: <stat>), and callers' numbers.
        for command in ("AT+CREG=1", "AT+CGREG=1", "AT+CEREG=1"):
            self._try(command)
        self.clip = self._try("AT+CLIP=1") is not None
        self.cnmi = None
        self.report_storage = None
        self._pdu_mode = self._cpms_ok = self._csms_ok = False
        self.setup_sms()
        if not self._pdu_mode:
            raise CommandError("AT+CMGF=0", self.setup_problem or "PDU mode refused")

    def setup_sms(self, timeout: float | None = None) -> str | None:
        """PDU mode, storage and new-message indications (AT+CMGF, AT+CPMS,
        AT+CSMS, AT+CNMI), retried with a bounded backoff while the modem
        refuses them: many refuse every SMS command for seconds after
        +CPIN: READY ("SMS not ready", until "SMS Ready" / "+QIND: SMS DONE"),
        and without +CNMI there are neither +CMTI nor status reports.

        Returns what is still wrong after `timeout` seconds (also kept in
        `setup_problem`), or None. timeout=0 is one attempt (the worker's
        refresh calls it so while a problem persists)."""
        timeout = self.sms_ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            problems = self._setup_sms_once()
            if not problems or time.monotonic() + delay > deadline:
                break
            log.info("SMS setup incomplete (%s); retrying in %.1fs", "; ".join(problems), delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        problem = "; ".join(problems) or None
        if problem and problem != self.setup_problem:
            log.warning("SMS setup incomplete: %s", problem)
        self.setup_problem = problem
        return problem

    def _setup_sms_once(self) -> list[str]:
        problems: list[str] = []
        if not self._pdu_mode:
            if self._try("AT+CMGF=0") is None:
                return ["AT+CMGF=0 (PDU mode) refused"]
            self._pdu_mode = True
        if not self._cpms_ok:
            if self._cpms_choices is None:
                self._cpms_choices = self._cpms_memories()
            if self._cpms_choices == []:
                # `+CPMS: (),(),()`: one fixed storage, nothing to choose.
                log.info("the modem offers no storage choice (AT+CPMS=? lists none); using its own")
                self._cpms_ok = True
            else:
                refusals: list[CommandError] = []
                for storage in CPMS_VARIANTS:
                    try:
                        self.cmd(f"AT+CPMS={storage}")
                    except CommandError as exc:
                        refusals.append(exc)
                        continue
                    self.cpms, self._cpms_ok = storage, True
                    break
                else:
                    if all(refused_for_good(exc) for exc in refusals):
                        log.info("the modem refuses every AT+CPMS setting; using its own storage")
                        self._cpms_ok = True
                    else:
                        problems.append("no AT+CPMS storage accepted")
        if self.direct_delivery and not self._csms_ok:
            if self._try("AT+CSMS=1") is not None:
                self._csms_ok = True
            else:
                problems.append("AT+CSMS=1 refused: no direct delivery")
        direct = self.direct_delivery and self._csms_ok
        if not self.polling_only and (self.cnmi is None or (direct and self.cnmi != CNMI_DIRECT)):
            refused: list[CommandError] = []
            for variant in ((CNMI_DIRECT,) if direct else ()) + CNMI_VARIANTS:
                try:
                    self.cmd(f"AT+CNMI={variant}")
                except CommandError as exc:
                    refused.append(exc)
                    continue
                self.cnmi = variant
                break
            if self.cnmi is None and all(refused_for_good(exc) for exc in refused):
                # Not "not ready": it never will. Waiting for it would hold
                # the modem offline for nothing; polling finds what arrives.
                log.warning("the modem takes no AT+CNMI setting: new messages are found by polling")
                self.polling_only = True
            elif self.cnmi is None:
                problems.append(
                    "no AT+CNMI setting accepted: no +CMTI and no status reports, "
                    "new messages are found by polling only"
                )
        lines = self._try("AT+CSMS?")
        if lines is None:
            # Unknown: an AT+CNMA the modem refuses costs less than one it missed.
            self.needs_ack = self.needs_ack or self._csms_ok
        for line in lines or []:
            if line.startswith("+CSMS:"):
                self.needs_ack = _csv(_strip_head(line))[0] == "1"
        if self.report_storage is None and "SR" not in self.refused_storages:
            if self._cpms_choices is None:
                self._cpms_choices = self._cpms_memories()
            if "SR" in (self._cpms_choices or []):
                self.report_storage = "SR"
        return problems

    def _cpms_memories(self) -> list[str] | None:
        """The memories AT+CPMS=? offers for reading (None: it would not say)."""
        lines = self._try("AT+CPMS=?")
        for line in lines or []:
            first = re.match(r"\+CPMS:\s*\(([^)]*)\)", line)
            if first:
                return [m.strip().strip('"').upper() for m in first.group(1).split(",") if m.strip().strip('"')]
        return None

    def unlock_sim(self) -> None:
        """Wait out SIM busy after power-up, enter the PIN if asked."""
        deadline = time.monotonic() + self.sim_busy_timeout
        while True:
            try:
                lines = self.cmd("AT+CPIN?", accept="+CPIN:")
                state = next((_strip_head(x) for x in lines if x.startswith("+CPIN:")), "")
            except CommandError as exc:
                lock = sim_lock(exc)
                reason = cme_code(exc.code).sim_reason if isinstance(exc, CmeError) else None
                if lock:
                    state = "SIM PUK" if lock == "puk" else "SIM PIN"
                elif reason in ("sim_missing", "sim_failure") and isinstance(exc, CmeError):
                    raise SimProblem(reason, f"{exc.text} (+CME ERROR: {exc.code})") from exc
                elif reason == "sim_busy" or (isinstance(exc, CmeError) and exc.code == 3):
                    state = "BUSY"
                else:
                    raise
            state = state.upper()
            if state == "READY":
                # A PIN that worked may be entered again after the modem rebooted.
                self.pin_sent = False
                return
            if state == "SIM PIN":
                if self.pin_sent:
                    raise SimProblem("pin_rejected", "the SIM still wants its PIN after MODEM_PIN was entered")
                if not self.pin:
                    raise SimProblem("pin_required", "the SIM wants a PIN; set MODEM_PIN or MODEM_PIN_FILE")
                # Once only, whatever comes back: three wrong tries lock the SIM (PUK).
                self.pin_sent = True
                try:
                    self.cmd(f'AT+CPIN="{self.pin}"')
                except CommandError as exc:
                    raise SimProblem(
                        "pin_rejected", f"MODEM_PIN was rejected ({exc.line}); not retried: fix MODEM_PIN"
                    ) from exc
                continue
            if "PUK" in state:
                raise SimProblem("puk_required", f"the SIM is locked ({state}); unlock it with its PUK")
            if state != "BUSY" and state not in ("NOT READY", ""):
                raise SimProblem("sim_failure", f"unexpected SIM state {state!r}")
            if time.monotonic() >= deadline:
                raise SimProblem("sim_busy", f"SIM not ready after {self.sim_busy_timeout:g}s")
            time.sleep(min(1.0, max(0.05, self.sim_busy_timeout / 20)))

    def sim_state(self) -> str:
        """`ready`, or a SimProblem reason; used by the periodic health check."""
        try:
            lines = self.cmd("AT+CPIN?", accept="+CPIN:")
        except CmeError as exc:
            lock = sim_lock(exc)
            if lock:
                return f"{lock}_required"
            return cme_code(exc.code).sim_reason or f"cme_{exc.code}"
        state = next((_strip_head(x) for x in lines if x.startswith("+CPIN:")), "").upper()
        if "PUK" in state:
            return "puk_required"
        return {"READY": "ready", "SIM PIN": "pin_required"}.get(state, "sim_failure" if state else "ready")

    # -- identity and health ----------------------------------------------
    def _first_value(self, command: str) -> str | None:
        lines = self._try(command)
        for line in lines or []:
            value = _strip_head(line).strip('"')
            if value:
                return value
        return None

    def identity(self) -> Identity:
        ident = Identity(
            manufacturer=self._first_value("AT+CGMI"),
            model=self._first_value("AT+CGMM"),
            firmware=self._first_value("AT+CGMR"),
        )
        imei = self._first_value("AT+CGSN")
        m = re.search(r"\d{14,17}", imei or "")
        ident.imei = m.group(0) if m else None
        imsi = self._first_value("AT+CIMI")
        m = re.search(r"\d{6,15}", imsi or "")
        ident.imsi = m.group(0) if m else None
        ident.iccid = self.iccid()
        ident.number = self.own_number()
        return ident

    def iccid(self) -> str | None:
        for command in ICCID_COMMANDS:
            lines = self._try(command)
            for line in lines or []:
                m = re.search(r"[0-9A-Fa-f]{18,22}", line)
                if not m:
                    continue
                value = m.group(0).upper()
                if command.startswith(("AT^ICCID", "AT+CRSM")) and value.startswith("98"):
                    # Read raw from the SIM (EF_ICCID): nibbles are swapped.
                    value = "".join(value[i + 1] + value[i] for i in range(0, len(value) - 1, 2))
                return value.rstrip("F")
        return None

    def own_number(self) -> str | None:
        for line in self._try("AT+CNUM") or []:
            if line.startswith("+CNUM:"):
                parts = _csv(_strip_head(line))
                if len(parts) >= 2 and parts[1]:
                    number = parts[1]
                    if len(parts) >= 3 and parts[2] == "145" and not number.startswith("+"):
                        number = "+" + number
                    return number
        return None

    def signal(self) -> Signal:
        for line in self.cmd("AT+CSQ"):
            if line.startswith("+CSQ:"):
                try:
                    index = int(_csv(_strip_head(line))[0])
                except (ValueError, IndexError):
                    return Signal(None, None)
                return Signal(index, csq_to_dbm(index))
        return Signal(None, None)

    def registration(self) -> str:
        best = "unknown"
        for command, head in (("AT+CREG?", "+CREG:"), ("AT+CEREG?", "+CEREG:")):
            for line in self._try(command) or []:
                if line.startswith(head):
                    parts = _csv(_strip_head(line))
                    try:
                        stat = int(parts[1] if len(parts) > 1 else parts[0])
                    except (ValueError, IndexError):
                        continue
                    state = REGISTRATION.get(stat, "unknown")
                    if state in ("home", "roaming"):
                        return state
                    if best == "unknown":
                        best = state
        return best

    def smsc(self) -> str | None:
        """The SIM's SMS service centre (AT+CSCA?): "" when it has none, None
        when the modem would not say (then nobody can tell it is missing)."""
        for line in self._try("AT+CSCA?") or []:
            if line.startswith("+CSCA:"):
                parts = _csv(_strip_head(line))
                number = parts[0] if parts else ""
                return number if re.search(r"\d{3,}", number) else ""
        return None

    def settings_lost(self) -> bool:
        """After a line that may mean a reboot (RDY, ^BOOT, +CPIN: READY):
        did the modem forget AT+CMEE=1? (Some print such lines as noise.)
        Those lines count as dealt with when it did not: init() deals with them
        when it did."""
        seen = self.boots_seen
        try:
            lines = self.cmd("AT+CMEE?")
        except CommandError:
            return True
        value = next((_strip_head(x) for x in lines if x.startswith("+CMEE:")), None)
        lost = value is not None and value != "1"
        if not lost:
            self.boots_handled = seen
        return lost

    @property
    def restarting(self) -> bool:
        """A line that may mean a restart arrived and has not been dealt with yet."""
        return self.boots_seen != self.boots_handled

    def hang_up(self) -> None:
        """Reject a ringing call (ATH; AT+CHUP where ATH is refused)."""
        if self._try("ATH") is None:
            self._try("AT+CHUP")

    def operator(self) -> str | None:
        for line in self._try("AT+COPS?") or []:
            if line.startswith("+COPS:"):
                parts = _csv(_strip_head(line))
                if len(parts) >= 3 and parts[2]:
                    return parts[2]
        return None

    # -- SMS ---------------------------------------------------------------
    def send_pdu(self, pdu_hex: str, tpdu_length: int) -> int:
        """Submit one segment; returns its message reference (TP-MR).

        Once the PDU is written, any answer but `+CMGS: <mr>` or a +CMS/+CME
        error raises SubmitUnconfirmed (or ModemTimeout with submitted=True):
        the SMS may have left and must not be resent."""
        command = f"AT+CMGS={tpdu_length}"
        try:
            lines = self.link.command_with_data(
                command,
                pdu_hex,
                self.submit_wait(command, pdu_hex),
                prompt_timeout=min(PROMPT_TIMEOUT, self.command_timeout),
                probe_after=self.send_probe_after,
            )
        except CmsError as exc:
            self._notice(exc)
            raise
        for line in lines:
            if line.startswith("+CMGS:"):
                try:
                    return int(_csv(_strip_head(line))[0])
                except (ValueError, IndexError):
                    raise SubmitUnconfirmed(command, line) from None
        raise SubmitUnconfirmed(command, "OK without +CMGS: <mr>")

    def submit_wait(self, command: str, pdu_hex: str) -> float:
        """How long one segment's AT+CMGS may take after the PDU: the bytes
        on the line at this baud rate (10 bits a character) plus the
        network's time for one submission, never more than send_timeout."""
        on_the_line = (len(command) + len(pdu_hex) + 2) * 10 / self.baudrate
        return min(self.send_timeout, self.submit_timeout + on_the_line)

    def _parse_listing(self, lines: list[str], head: str, index: int | None = None) -> list[StoredMessage]:
        out: list[StoredMessage] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith(head):
                parts = _csv(_strip_head(line))
                pdu = lines[i + 1] if i + 1 < len(lines) else ""
                i += 2
                # Only the index is needed (and +CMGR has it from the
                # question); every other header field is optional in
                # practice, since the PDU itself says what it is.
                try:
                    if head == "+CMGL:":
                        slot, stat_field = int(parts[0]), parts[1] if len(parts) > 1 else ""
                    else:
                        if index is None:
                            raise ValueError("+CMGR without the index it was asked for")
                        slot, stat_field = index, parts[0] if parts else ""
                except (ValueError, IndexError):
                    log.warning("unparsable stored message header %r", line)
                    continue
                stat = _number(stat_field)
                if pdu and pdu[0] not in "+^":
                    out.append(StoredMessage(slot, stat, pdu))
                else:
                    log.warning("stored message header %r without its PDU line", line)
                    i -= 1  # that line is the next header
                continue
            i += 1
        return out

    def list_messages(self, stat: int = 4, storage: str | None = None) -> list[StoredMessage]:
        """AT+CMGL in the read storage, or in `storage` ("SR") for this listing only."""
        with self._storage(storage, strict=True):
            return self._parse_listing(self.cmd(f"AT+CMGL={stat}", max(self.command_timeout, 30)), "+CMGL:")

    def read_message(self, index: int) -> StoredMessage | None:
        """Slot `index` of the memory in use (`in_storage` for another)."""
        try:
            found = self._parse_listing(self.cmd(f"AT+CMGR={index}"), "+CMGR:", index)
        except CmsError as exc:
            if exc.code == 321:  # invalid memory index: nothing there
                return None
            raise
        return found[0] if found else None

    def delete_message(self, index: int, storage: str | None = None) -> None:
        with self._storage(storage):
            self.cmd(f"AT+CMGD={index}")

    def in_storage(self, storage: str | None) -> AbstractContextManager[None]:
        """Several reads and deletes in `storage` with one switch there and back
        (a +CDSI names "SR" on some modems: a report is read, then deleted)."""
        return self._storage(storage)

    @contextmanager
    def _storage(self, storage: str | None, strict: bool = False) -> Iterator[None]:
        """Read/delete in `storage` (from +CMTI/+CDSI), then back to what init
        chose. strict: a refused switch raises instead of reading the default."""
        current = self.cpms.split(",")[0].strip('"')
        switched = storage is not None and storage != "" and storage.upper() != current
        if switched and storage is not None:
            wanted = storage.upper()
            command = f'AT+CPMS="{storage}"'
            if wanted in self.refused_storages:
                if strict:
                    raise NotSupported(command, "refused earlier on this link; not asked again")
                switched = False
            else:
                try:
                    self.cmd(command)
                except CommandError as exc:
                    self._storage_refused(wanted, exc)
                    if strict:
                        raise
                    switched = False
        try:
            yield
        finally:
            if switched:
                self._try(f"AT+CPMS={self.cpms}")

    @property
    def read_memory(self) -> str:
        """The memory AT+CMGR/AT+CMGL/AT+CMGD work in unless told otherwise."""
        return self.cpms.split(",")[0].strip('"')

    def _storage_refused(self, memory: str, exc: CommandError) -> None:
        if not self._cpms_ok or self.setup_problem is not None:
            return  # SMS not ready yet, say: that says nothing about this memory
        self.refused_storages.add(memory)
        if self.report_storage == memory:
            self.report_storage = None
        log.warning("the modem refuses message memory %s (%s); not asked again on this link", memory, exc.line)

    def storage_usage(self) -> StorageUsage | None:
        """The receive storage's usage, from AT+CPMS?."""
        return _cpms_usage(self._try("AT+CPMS?") or [])

    def report_storage_usage(self) -> StorageUsage | None:
        """The usage of the status report memory ("SR") where the modem
        has one: AT+CPMS? lists only the three selected memories."""
        if not self.report_storage:
            return None
        try:
            with self._storage(self.report_storage, strict=True):
                lines = self.cmd("AT+CPMS?")
        except CommandError as exc:
            log.debug("cannot read %s usage: %s", self.report_storage, exc)
            return None
        return _cpms_usage(lines)

    def ack(self) -> None:
        """AT+CNMA for a directly delivered +CMT/+CDS (only when +CSMS=1)."""
        if self.needs_ack:
            self._try("AT+CNMA")

    # -- USSD --------------------------------------------------------------
    def ussd(self, code: str, timeout: float = 30.0) -> UssdReply:
        if not re.fullmatch(r"[0-9*#+]{1,64}", code or ""):
            raise ValueError(f"not a USSD code: {code!r}")
        with self._ussd_lock:
            waiter = _UssdWaiter()
            self._ussd_waiter = waiter
            try:
                lines = self.cmd(f'AT+CUSD=1,"{code}",15', timeout)
                reply = next((x for x in lines if x.startswith("+CUSD:")), None)
                if reply is None:
                    if not waiter.done.wait(timeout) or waiter.line is None:
                        raise ModemTimeout(f"+CUSD reply to {code}", timeout)
                    reply = waiter.line
            finally:
                self._ussd_waiter = None
        return self._parse_cusd(reply)

    @staticmethod
    def _parse_cusd(line: str) -> UssdReply:
        parts = _csv(_strip_head(line))
        status = _number(parts[0]) if parts else None
        text = parts[1] if len(parts) > 1 else ""
        dcs = _number(parts[2]) if len(parts) > 2 else None
        return {"status": status, "text": decode_ussd_text(text, dcs), "dcs": dcs, "session_open": status == 1}

    def ussd_cancel(self) -> None:
        """End a USSD session the network keeps open (a menu waiting for a reply)."""
        self.cmd("AT+CUSD=2")

    # -- recovery ----------------------------------------------------------
    def reset(self, timeout: float = 10.0) -> str:
        """ATZ, and AT+CFUN=1,1 (full reboot) when ATZ does not bring it back."""
        try:
            self.cmd("ATZ", timeout)
            self.sync(attempts=2, timeout=timeout / 2)
            return "atz"
        except (ModemTimeout, CommandError):
            pass
        try:
            self.cmd("AT+CFUN=1,1", timeout)
        except ModemTimeout:
            # Many modules reboot before answering: the port may disappear now.
            pass
        return "cfun"

    # -- unsolicited -------------------------------------------------------
    def _unsolicited(self, line: str, pdu: str | None) -> None:
        head = line_head(line)
        body = _strip_head(line)
        if head == "+CUSD":
            waiter = self._ussd_waiter
            if waiter is not None:
                waiter.line = line
                waiter.done.set()
                return
            event = ModemEvent("ussd", line, fields=self._parse_cusd(line))
        elif head in ("+CMTI", "+CDSI"):
            parts = _csv(body)
            try:
                index = int(parts[-1])
            except (ValueError, IndexError):
                event = ModemEvent("noise", line)
            else:
                kind = "stored_sms" if head == "+CMTI" else "stored_report"
                event = ModemEvent(kind, line, storage=parts[0] if len(parts) > 1 else None, index=index)
        elif head == "+CMT":
            event = ModemEvent("sms", line, pdu=pdu)
        elif head == "+CDS":
            event = ModemEvent("report", line, pdu=pdu)
        elif head in ("RING", "+CRING"):
            event = ModemEvent("ring", line)
        elif head == "+CMGS":
            # The answer to a send given up on (timeout, or the modem lost it
            # and answered a probe): it did leave, with this reference.
            log.warning("late answer to a send given up on: %s", line)
            event = ModemEvent("noise", line)
        elif head == "+CLIP":
            parts = _csv(body)
            number = parts[0] if parts else ""
            if number and len(parts) > 1 and parts[1] == "145" and not number.startswith("+"):
                number = "+" + number
            event = ModemEvent("caller", line, fields={"number": number or None})
        elif head in ("RDY", "^BOOT") or (head == "+CFUN" and body == "1") or line.upper() == "+CPIN: READY":
            self.boots_seen += 1
            event = ModemEvent("reboot", line)
        elif head in ("+CPIN", "^SIMST", "+QUSIM") or ("SIM" in head and "REMOV" in line.upper()):
            event = ModemEvent("sim", line)
        elif "FULL" in line.upper() and head in ("^SMMEMFULL", "+CIEV", "+QIND", "+CMTI"):
            event = ModemEvent("storage_full", line)
        elif head in ("+CREG", "+CEREG", "+CGREG"):
            parts = _csv(body)
            # The unsolicited form: <stat>[,<lac>,<ci>[,<act>]] (no <n> before it).
            stat = _number(parts[0]) if parts else None
            state = REGISTRATION.get(stat, "unknown") if stat is not None else None
            event = ModemEvent("registration", line, fields={"domain": head, "state": state})
        else:
            event = ModemEvent("noise", line)
        self.on_event(event)


__all__ = [
    "ATModem",
    "CmeError",
    "CmsError",
    "CommandError",
    "Identity",
    "ModemError",
    "ModemEvent",
    "ModemTimeout",
    "NotSupported",
    "PortGone",
    "SimProblem",
    "StoredMessage",
    "SubmitUnconfirmed",
    "csq_to_dbm",
    "decode_ussd_text",
]
