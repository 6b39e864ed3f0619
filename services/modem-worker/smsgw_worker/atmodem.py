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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from .errors import (
    CmeError, CmsError, CommandError, ModemError, ModemTimeout, NotSupported, PortGone, SimProblem,
    SubmitUnconfirmed,
)
from .serial_link import SerialLink, line_head

log = logging.getLogger(__name__)

REGISTRATION = {0: "not_registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown", 5: "roaming",
                6: "home", 7: "roaming"}  # 6/7: "SMS only" variants (TS 27.007 7.2)
# Tried in order: +CMTI for new SMS and +CDS for reports, then +CDSI (reports
# stored), then buffer mode 1 for modems that refuse mode 2.
CNMI_VARIANTS = ("2,1,0,1,0", "2,1,0,2,0", "1,1,0,1,0", "1,1,0,2,0", "2,1,0,0,0")
# Direct delivery (with AT+CSMS=1): +CMT and +CDS, each acknowledged by AT+CNMA.
CNMI_DIRECT = "2,2,0,1,0"
CPMS_VARIANTS = ('"SM","SM","SM"', '"ME","ME","ME"', '"SM","SM"', '"SM"')
# +CME codes that answer AT+CPIN? with what is wrong with the SIM (TS 27.007
# 9.2), as SimProblem reasons.
SIM_CME_REASONS = {10: "sim_missing", 13: "sim_failure", 14: "sim_busy"}
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
    stat: int  # 0 unread, 1 read, 2 unsent, 3 sent (TS 27.005 3.1)
    pdu: str


@dataclass
class ModemEvent:
    """kind: stored_sms, sms, report, stored_report, ussd, ring, sim, storage_full, registration, noise."""

    kind: str
    line: str
    pdu: str | None = None
    storage: str | None = None
    index: int | None = None
    fields: dict = field(default_factory=dict)


def _strip_head(line: str) -> str:
    return line.split(":", 1)[1].strip() if ":" in line and line.startswith(("+", "^", "$")) else line.strip()


def _csv(value: str) -> list[str]:
    """`1,"a,b",,3` -> ['1', 'a,b', '', '3']."""
    return [p.strip() for p in next(csv.reader([value], skipinitialspace=True), [])]


def _cpms_usage(lines: list[str]) -> tuple[int, int] | None:
    """(used, total) of the first memory in an AT+CPMS? answer."""
    for line in lines:
        if line.startswith("+CPMS:"):
            parts = _csv(_strip_head(line))
            try:
                return int(parts[1]), int(parts[2])
            except (ValueError, IndexError):
                return None
    return None


def csq_to_dbm(index: int | None) -> int | None:
    """+CSQ rssi index to dBm (TS 27.007 8.5): 0 is -113 dBm or less, 31 is -51 or more."""
    if index is None or not 0 <= index <= 31:
        return None
    return -113 + 2 * index


def decode_ussd_text(text: str, dcs: int | None) -> str:
    # Many modems hand UCS-2 replies (DCS 0x48 / 72) over as hex.
    if dcs is not None and (dcs & 0x0C) == 0x08 and re.fullmatch(r"(?:[0-9A-Fa-f]{4})+", text or ""):
        try:
            return bytes.fromhex(text).decode("utf-16-be")
        except ValueError:
            return text
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
        sim_busy_timeout: float = 30.0,
        sms_ready_timeout: float = 30.0,
        direct_delivery: bool = False,
        on_event: Callable[[ModemEvent], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ):
        self.device = device
        self.pin = pin
        self.command_timeout = command_timeout
        self.send_timeout = send_timeout
        self.sim_busy_timeout = sim_busy_timeout
        self.sms_ready_timeout = sms_ready_timeout
        self.direct_delivery = direct_delivery
        self.on_event = on_event or (lambda event: None)
        self.link = SerialLink(
            device, baudrate=baudrate, on_unsolicited=self._unsolicited,
            on_fatal=on_fatal, default_timeout=command_timeout,
        )
        self.cnmi: str | None = None
        self.cpms = '"SM","SM","SM"'  # the storage init settled on
        self.needs_ack = False  # AT+CSMS=1: +CMT/+CDS must be acknowledged with AT+CNMA
        self.report_storage: str | None = None  # "SR" where the modem has a memory of its own for reports
        self.setup_problem: str | None = None  # what SMS setup could not do (health last_error)
        self._pdu_mode = self._cpms_ok = self._csms_ok = False
        self._ussd_waiter: list | None = None
        self._ussd_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        self.link.open()

    def close(self) -> None:
        self.link.close()

    def cmd(self, command: str, timeout: float | None = None, **kw) -> list[str]:
        return self.link.command(command, timeout or self.command_timeout, **kw)

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
                return
            except ModemTimeout as exc:
                last = exc
            except CommandError as exc:
                # Leftover input made the modem answer ERROR; the next AT is clean.
                last = exc
        raise last or ModemTimeout("AT", timeout)

    def init(self) -> None:
        """Bring the modem into the state the worker expects. Raises SimProblem
        when the SIM is missing or locked, ModemTimeout when it does not answer."""
        self.sync()
        self._try("ATE0")
        self._try("AT+CMEE=1")
        self.unlock_sim()
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
            for storage in CPMS_VARIANTS:
                if self._try(f"AT+CPMS={storage}") is not None:
                    self.cpms, self._cpms_ok = storage, True
                    break
            else:
                problems.append("no AT+CPMS storage accepted")
        if self.direct_delivery and not self._csms_ok:
            if self._try("AT+CSMS=1") is not None:
                self._csms_ok = True
            else:
                problems.append("AT+CSMS=1 refused: no direct delivery")
        direct = self.direct_delivery and self._csms_ok
        if self.cnmi is None or (direct and self.cnmi != CNMI_DIRECT):
            for variant in ((CNMI_DIRECT,) if direct else ()) + CNMI_VARIANTS:
                if self._try(f"AT+CNMI={variant}") is not None:
                    self.cnmi = variant
                    break
            if self.cnmi is None:
                problems.append("no AT+CNMI setting accepted: no +CMTI and no status reports, "
                                "new messages are found by polling only")
        lines = self._try("AT+CSMS?")
        if lines is None:
            # Unknown: an AT+CNMA the modem refuses costs less than one it missed.
            self.needs_ack = self.needs_ack or self._csms_ok
        for line in lines or []:
            if line.startswith("+CSMS:"):
                self.needs_ack = _csv(_strip_head(line))[0] == "1"
        if self.report_storage is None:
            for line in self._try("AT+CPMS=?") or []:
                first = re.match(r"\+CPMS:\s*\(([^)]*)\)", line)
                if first and '"SR"' in first.group(1).upper():
                    self.report_storage = "SR"
        return problems

    def unlock_sim(self) -> None:
        """Wait out SIM busy after power-up, enter the PIN if asked."""
        deadline = time.monotonic() + self.sim_busy_timeout
        pin_sent = False
        while True:
            try:
                lines = self.cmd("AT+CPIN?", accept="+CPIN:")
                state = next((_strip_head(x) for x in lines if x.startswith("+CPIN:")), "")
            except CmeError as exc:
                reason = SIM_CME_REASONS.get(exc.code)
                if reason in ("sim_missing", "sim_failure"):
                    raise SimProblem(reason, f"{exc.text} (+CME ERROR: {exc.code})") from exc
                if reason == "sim_busy" or exc.code == 3:
                    state = "BUSY"
                else:
                    raise
            state = state.upper()
            if state == "READY":
                return
            if state == "SIM PIN":
                if pin_sent:
                    raise SimProblem("pin_required", "the PIN was not accepted")
                if not self.pin:
                    raise SimProblem("pin_required", "the SIM wants a PIN; set MODEM_PIN or MODEM_PIN_FILE")
                try:
                    self.cmd(f'AT+CPIN="{self.pin}"')
                except CmeError as exc:
                    # Never retry a wrong PIN: three tries lock the SIM (PUK).
                    raise SimProblem("pin_required", f"PIN rejected (+CME ERROR: {exc.code})") from exc
                pin_sent = True
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
            return SIM_CME_REASONS.get(exc.code, f"cme_{exc.code}")
        state = next((_strip_head(x) for x in lines if x.startswith("+CPIN:")), "").upper()
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

    def signal(self) -> tuple[int | None, int | None]:
        """(+CSQ index 0..31 or 99, dBm or None)."""
        for line in self.cmd("AT+CSQ"):
            if line.startswith("+CSQ:"):
                try:
                    index = int(_csv(_strip_head(line))[0])
                except (ValueError, IndexError):
                    return None, None
                return index, csq_to_dbm(index)
        return None, None

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
        lines = self.link.command_with_data(command, pdu_hex, self.send_timeout)
        for line in lines:
            if line.startswith("+CMGS:"):
                try:
                    return int(_csv(_strip_head(line))[0])
                except (ValueError, IndexError):
                    raise SubmitUnconfirmed(command, line) from None
        raise SubmitUnconfirmed(command, "OK without +CMGS: <mr>")

    def _parse_listing(self, lines: list[str], head: str, index: int | None = None) -> list[StoredMessage]:
        out: list[StoredMessage] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith(head):
                parts = _csv(_strip_head(line))
                pdu = lines[i + 1] if i + 1 < len(lines) else ""
                i += 2
                try:
                    if head == "+CMGL:":
                        out.append(StoredMessage(int(parts[0]), int(parts[1]), pdu))
                    else:
                        out.append(StoredMessage(index, int(parts[0]), pdu))
                except (ValueError, IndexError):
                    log.warning("unparsable stored message header %r", line)
                continue
            i += 1
        return out

    def list_messages(self, stat: int = 4, storage: str | None = None) -> list[StoredMessage]:
        """AT+CMGL in the read storage, or in `storage` ("SR") for this listing only."""
        with self._storage(storage, strict=True):
            return self._parse_listing(self.cmd(f"AT+CMGL={stat}", max(self.command_timeout, 30)), "+CMGL:")

    def read_message(self, index: int, storage: str | None = None) -> StoredMessage | None:
        with self._storage(storage):
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

    @contextmanager
    def _storage(self, storage: str | None, strict: bool = False):
        """Read/delete in `storage` (from +CMTI/+CDSI), then back to what init
        chose. strict: a refused switch raises instead of reading the default."""
        current = self.cpms.split(",")[0].strip('"')
        switched = bool(storage) and storage.upper() != current
        if switched:
            if strict:
                self.cmd(f'AT+CPMS="{storage}"')
            else:
                self._try(f'AT+CPMS="{storage}"')
        try:
            yield
        finally:
            if switched:
                self._try(f"AT+CPMS={self.cpms}")

    def storage_usage(self) -> tuple[int, int] | None:
        """(used, total) of the receive storage, from AT+CPMS?."""
        return _cpms_usage(self._try("AT+CPMS?") or [])

    def report_storage_usage(self) -> tuple[int, int] | None:
        """(used, total) of the status report memory ("SR") where the modem
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
    def ussd(self, code: str, timeout: float = 30.0) -> dict:
        if not re.fullmatch(r"[0-9*#+]{1,64}", code or ""):
            raise ValueError(f"not a USSD code: {code!r}")
        with self._ussd_lock:
            waiter: list = [threading.Event(), None]
            self._ussd_waiter = waiter
            try:
                lines = self.cmd(f'AT+CUSD=1,"{code}",15', timeout)
                reply = next((x for x in lines if x.startswith("+CUSD:")), None)
                if reply is None:
                    if not waiter[0].wait(timeout):
                        raise ModemTimeout(f"+CUSD reply to {code}", timeout)
                    reply = waiter[1]
            finally:
                self._ussd_waiter = None
        return self._parse_cusd(reply)

    @staticmethod
    def _parse_cusd(line: str) -> dict:
        parts = _csv(_strip_head(line))
        status = int(parts[0]) if parts and parts[0].isdigit() else None
        text = parts[1] if len(parts) > 1 else ""
        dcs = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        return {"status": status, "text": decode_ussd_text(text, dcs), "dcs": dcs}

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
                waiter[1] = line
                waiter[0].set()
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
        elif head in ("+CPIN", "^SIMST", "+QUSIM") or "SIM" in head and "REMOV" in line.upper():
            event = ModemEvent("sim", line)
        elif "FULL" in line.upper() and head in ("^SMMEMFULL", "+CIEV", "+QIND", "+CMTI"):
            event = ModemEvent("storage_full", line)
        elif head in ("+CREG", "+CEREG", "+CGREG"):
            event = ModemEvent("registration", line)
        else:
            event = ModemEvent("noise", line)
        self.on_event(event)


__all__ = [
    "ATModem", "Identity", "StoredMessage", "ModemEvent", "csq_to_dbm", "decode_ussd_text",
    "ModemError", "ModemTimeout", "PortGone", "CmsError", "CmeError", "CommandError", "NotSupported",
    "SimProblem", "SubmitUnconfirmed",
]
