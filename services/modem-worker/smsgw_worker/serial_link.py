"""The serial layer: owns the port, splits the byte stream into lines and
routes each line either to the command waiting for its reply or to the
handler of unsolicited result codes.

One reader thread reads; writes go through one lock and at most one command
is in flight (a second caller waits its turn). Unsolicited lines are routed
by their prefix whatever command is pending: a `+CMTI` or `+CDS` in the middle
of an `AT+CMGS` exchange must not end up in the send's reply (Kannel's
bearerbox was confused by exactly that).

The unsolicited handler and the fatal callback run on the reader thread, so
they must only hand the event over (e.g. put it on a queue), never issue a
command themselves.

Liveness while a send is pending (docs/modems.md, "Modem faults"): once the
PDU is written nothing may be interleaved that could abort the submission,
so the link only listens, and when the modem has said nothing at all for
`probe_after` seconds it writes a bare `AT`. A modem still busy with the
submission queues it and answers after `+CMGS` (the emulator does the same);
a modem that stalled and lost the send answers it alone. That answer ends
the wait at once: the SMS may have left, its reference is lost
(ModemTimeout, submitted=True), instead of waiting out the whole limit.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

import serial

from .errors import (
    CmeError,
    CmsError,
    CommandError,
    ModemTimeout,
    PortGone,
    SubmitUnconfirmed,
    parse_error_line,
)

log = logging.getLogger(__name__)

# Lines that are unsolicited unless they answer the pending command (e.g.
# `+CREG: 0,1` answers AT+CREG? while `+CREG: 1` alone is a registration change).
URC_HEADS = {
    "+CMTI",
    "+CMT",
    "+CDS",
    "+CDSI",
    "+CUSD",
    "RING",
    "+CRING",
    "+CLIP",
    "+CREG",
    "+CGREG",
    "+CEREG",
    "+CPIN",
    "+CFUN",
    "+CIEV",
    "+CBM",
    "+CBMI",
    "+PBREADY",
    "+QIND",
    "+QUSIM",
    "+STIN",
    "+CSQN",
    "RDY",
    "SMS READY",
    "CALL READY",
    "NO CARRIER",
    "^RSSI",
    "^HCSQ",
    "^MODE",
    "^BOOT",
    "^SRVST",
    "^SIMST",
    "^DSFLOWRPT",
    "^RSSILVL",
    "^CEND",
    "^CONN",
    "^SMMEMFULL",
    "^ORIG",
    "^CONF",
    "^STIN",
    "^SYSSTART",
    "^NDISSTAT",
}
# Unsolicited lines followed by a PDU line (PDU mode, TS 27.005 3.4.1).
URC_WITH_PDU = {"+CMT", "+CDS", "+CBM"}
FINAL_OK = {"OK"}
# A silent modem is probed again this often once the first probe went unanswered.
PROBE_REPEAT = 1.0
# How long the line must stay quiet before answers that queued up during a
# stall (to probes, to a cancelled AT+CMGS) count as all read.
SETTLE_QUIET, SETTLE_LIMIT = 0.3, 2.0
FINAL_ERRORS = ("ERROR", "+CME ERROR:", "+CMS ERROR:", "COMMAND NOT SUPPORT", "TOO MANY PARAMETERS")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
CTRL_Z, ESC = b"\x1a", b"\x1b"

UnsolicitedHandler = Callable[[str, "str | None"], None]
FatalHandler = Callable[[BaseException], None]


def line_head(line: str) -> str:
    """`+CMTI: "SM",3` -> `+CMTI`; `RING` -> `RING`."""
    return line.split(":", 1)[0].strip().upper()


def response_head(command: str) -> str | None:
    """The prefix a command's information lines carry: AT+CSQ -> +CSQ."""
    m = re.match(r"^AT([+^$][A-Za-z0-9]+)", command.strip(), re.IGNORECASE)
    return m.group(1).upper() if m else None


class _Pending:
    def __init__(self, command: str, data: str | None, accept: str | None):
        self.command = command
        self.head = response_head(command)
        self.data = data
        self.accept = accept
        self.lines: list[str] = []
        self.final: str | None = None
        self.error: BaseException | None = None
        self.prompt = False
        self.accepted_at: float | None = None
        self.probes = 0  # bare ATs written while the send's answer was awaited
        self.probe_answered: str | None = None  # the final line that answered one
        self.wake = threading.Event()

    def is_echo(self, line: str) -> bool:
        text = line.rstrip("\x1a")
        return text.upper() == self.command.upper() or (self.data is not None and text == self.data)


class SerialLink:
    def __init__(
        self,
        device: str,
        *,
        baudrate: int = 115200,
        on_unsolicited: UnsolicitedHandler | None = None,
        on_fatal: FatalHandler | None = None,
        default_timeout: float = 10.0,
        exclusive: bool = True,
    ):
        self.device = device
        self.baudrate = baudrate
        self.on_unsolicited = on_unsolicited or (lambda line, pdu: None)
        self.on_fatal = on_fatal or (lambda exc: None)
        self.default_timeout = default_timeout
        self.exclusive = exclusive
        self.port: serial.Serial | None = None
        self._write_lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._pending: _Pending | None = None
        self._pending_lock = threading.Lock()
        self._urc_head: str | None = None  # +CMT/+CDS line awaiting its PDU line
        self._urc_head_at = 0.0
        self._reader: threading.Thread | None = None
        self._closing = False
        self.dead: BaseException | None = None
        self.last_rx = time.monotonic()  # when the modem last sent any byte

    # -- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        try:
            self.port = serial.Serial(
                self.device, self.baudrate, timeout=0.2, write_timeout=5, exclusive=self.exclusive
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortGone(f"cannot open {self.device}: {exc}") from exc
        self._closing = False
        self.dead = None
        self._reader = threading.Thread(target=self._read_loop, name=f"serial-reader {self.device}", daemon=True)
        self._reader.start()

    def close(self) -> None:
        self._closing = True
        port, self.port = self.port, None
        if port is not None:
            try:
                port.close()
            except Exception:
                pass
        if self._reader and self._reader is not threading.current_thread():
            self._reader.join(timeout=2)
        self._fail_pending(PortGone("link closed"))

    @property
    def is_open(self) -> bool:
        return self.port is not None and self.dead is None

    # -- commands ----------------------------------------------------------
    def command(self, command: str, timeout: float | None = None, *, accept: str | None = None) -> list[str]:
        """Send one AT command; return its information lines (without the final OK).

        `accept`: a line with this prefix also completes the command if no
        final code follows within half a second (some modems answer
        `+CPIN: READY` without an OK).
        """
        return self._exchange(command, None, timeout or self.default_timeout, accept)

    def command_with_data(
        self, command: str, data: str, timeout: float, prompt_timeout: float = 10.0, probe_after: float = 0.0
    ) -> list[str]:
        """`AT+CMGS=<len>`, wait for the `> ` prompt, write data + Ctrl-Z, wait for the result.

        No prompt within `prompt_timeout`: ESC, and ModemTimeout with
        submitted=False (nothing was written, safe to retry). After the
        data: ModemTimeout with submitted=True after `timeout`, or as soon
        as a liveness probe (`probe_after` s of silence; 0 = never) is
        answered before the send is."""
        return self._exchange(command, data, timeout, None, prompt_timeout, probe_after)

    def settle(self, quiet: float = SETTLE_QUIET, limit: float = SETTLE_LIMIT) -> None:
        """Wait (at most `limit` s) until the modem has been silent for `quiet`
        s: what it held back during a stall comes in one burst, and goes to
        the unsolicited handler, not to the next command."""
        deadline = time.monotonic() + limit
        while True:
            now = time.monotonic()
            silent_for = now - self.last_rx
            if silent_for >= quiet or now >= deadline:
                return
            time.sleep(min(quiet - silent_for, deadline - now))

    def _exchange(
        self,
        command: str,
        data: str | None,
        timeout: float,
        accept: str | None,
        prompt_timeout: float = 10.0,
        probe_after: float = 0.0,
    ) -> list[str]:
        with self._command_lock:
            if self.dead is not None or self.port is None:
                raise PortGone(f"{self.device} is not open")
            pending = _Pending(command, data, accept)
            with self._pending_lock:
                self._pending = pending
            try:
                self._write(command.encode("ascii") + b"\r")
                if data is not None:
                    self._await_prompt(pending, prompt_timeout)
                    self._write(data.encode("ascii") + CTRL_Z)
                    submitted = True
                else:
                    submitted = False
                self._await_final(pending, timeout, submitted, probe_after)
            finally:
                with self._pending_lock:
                    self._pending = None
                if pending.probes:
                    # The modem answers queued probes right after the send:
                    # let those answers pass before the next command goes out.
                    self.settle()
            if pending.error is not None:
                raise pending.error
            if pending.final is not None and pending.final not in FINAL_OK:
                error = parse_error_line(pending.final, command)
                if data is not None and not isinstance(error, (CmsError, CmeError)):
                    # After the PDU only a coded error says for sure that nothing left.
                    raise SubmitUnconfirmed(command, pending.final)
                raise error
            return pending.lines

    def _await_prompt(self, pending: _Pending, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pending.prompt and pending.final is None and pending.error is None:
            left = deadline - time.monotonic()
            if left <= 0:
                # Cancel the half-entered command so the modem accepts the next one.
                try:
                    self._write(ESC)
                except PortGone:
                    pass
                raise ModemTimeout(pending.command + " (no prompt)", timeout, submitted=False)
            pending.wake.wait(left)
            pending.wake.clear()
        if pending.error is not None:
            raise pending.error
        if pending.final is not None:
            # Refused before the prompt (e.g. +CMS ERROR: 304): nothing was sent.
            if pending.final in FINAL_OK:
                raise CommandError(pending.command, "OK without a prompt")
            raise parse_error_line(pending.final, pending.command)

    def _await_final(self, pending: _Pending, timeout: float, submitted: bool, probe_after: float = 0.0) -> None:
        started = time.monotonic()
        deadline = started + timeout
        probing = submitted and probe_after > 0
        last_probe = started
        while pending.final is None and pending.error is None:
            now = time.monotonic()
            if pending.accepted_at is not None and now - pending.accepted_at >= 0.5:
                return
            if pending.probe_answered is not None:
                raise ModemTimeout(
                    pending.command,
                    now - started,
                    submitted=True,
                    why=f"the modem answered a liveness probe ({pending.probe_answered}) but never the send",
                )
            left = deadline - now
            if left <= 0:
                raise ModemTimeout(pending.command, timeout, submitted=submitted)
            wait = left if pending.accepted_at is None else min(left, 0.5)
            if probing:
                # Silent for probe_after since the PDU (PROBE_REPEAT since an
                # unanswered probe): ask whether anybody is still there.
                needed = probe_after if pending.probes == 0 else PROBE_REPEAT
                due = max(self.last_rx, last_probe) + needed
                if now >= due:
                    # Counted before it is written: a quick modem's answer must
                    # never reach the reader as the send's own.
                    pending.probes += 1
                    self._write(b"AT\r")
                    last_probe, due = now, now + PROBE_REPEAT
                    log.warning("no answer to %s for %.1fs: probing the modem with AT", pending.command, now - started)
                wait = min(wait, max(0.05, due - now))
            pending.wake.wait(wait)
            pending.wake.clear()
        if isinstance(pending.error, PortGone) and submitted:
            # The PDU went out before the port died: the SMS may have left.
            pending.error = ModemTimeout(pending.command + " (port lost)", timeout, submitted=True)

    def _write(self, data: bytes) -> None:
        port = self.port
        if port is None:
            raise PortGone(f"{self.device} is not open")
        with self._write_lock:
            try:
                port.write(data)
                port.flush()
            except (serial.SerialException, OSError) as exc:
                raise PortGone(f"write to {self.device} failed: {exc}") from exc

    def _fail_pending(self, exc: BaseException) -> None:
        with self._pending_lock:
            pending = self._pending
        if pending is not None and pending.final is None and pending.error is None:
            pending.error = exc
            pending.wake.set()

    # -- reading -----------------------------------------------------------
    def _read_loop(self) -> None:
        buf = bytearray()
        port = self.port
        if port is None:
            return
        try:
            while not self._closing:
                chunk = port.read(port.in_waiting or 1)
                if not chunk:
                    self._flush_stale_urc()
                    continue
                self.last_rx = time.monotonic()
                buf += chunk.replace(b"\x00", b"")
                buf = self._split(buf)
        except Exception as exc:  # SerialException, OSError(EIO), TypeError after close
            if self._closing:
                return
            err = PortGone(f"{self.device} vanished: {exc}")
            self.dead = err
            log.warning("serial port %s died: %s", self.device, exc)
            self._fail_pending(err)
            try:
                self.on_fatal(err)
            except Exception:
                log.exception("fatal handler failed")

    def _split(self, buf: bytearray) -> bytearray:
        while True:
            self._take_prompt(buf)
            cr, lf = buf.find(b"\r"), buf.find(b"\n")
            if cr < 0 and lf < 0:
                break
            cut = lf if cr < 0 else cr if lf < 0 else min(cr, lf)
            raw = bytes(buf[:cut])
            del buf[: cut + 1]
            if raw:
                self._line(raw.decode("latin-1").strip())
        return buf

    def _take_prompt(self, buf: bytearray) -> None:
        # The prompt has no line end, and an unsolicited line may follow it
        # at once, so it is recognised at the start of whatever comes next.
        if not buf.startswith(b">"):
            return
        with self._pending_lock:
            pending = self._pending
        if pending is not None and pending.data is not None and not pending.prompt:
            del buf[: 2 if buf.startswith(b"> ") else 1]
            pending.prompt = True
            pending.wake.set()

    def _flush_stale_urc(self) -> None:
        # A +CMT whose PDU line never came (truncated): hand it over anyway.
        if self._urc_head is not None and time.monotonic() - self._urc_head_at > 1.0:
            head, self._urc_head = self._urc_head, None
            self._dispatch_urc(head, None)

    def _line(self, line: str) -> None:
        if not line:
            return
        if self._urc_head is not None:
            head, self._urc_head = self._urc_head, None
            if _HEX.match(line):
                self._dispatch_urc(head, line)
                return
            log.warning("unsolicited %r without its PDU line", head)
            self._dispatch_urc(head, None)
        if _CONTROL.search(line):
            # No AT reply carries control characters: line noise, not an answer.
            self._dispatch_urc(line, None)
            return
        with self._pending_lock:
            pending = self._pending
        head = line_head(line)
        if pending is not None and pending.head is not None and head == pending.head:
            self._to_pending(pending, line)
            return
        if head in URC_HEADS:
            if head in URC_WITH_PDU:
                self._urc_head, self._urc_head_at = line, time.monotonic()
            else:
                self._dispatch_urc(line, None)
            return
        if pending is not None:
            self._to_pending(pending, line)
            return
        # A late reply to a timed-out command, or noise: nobody waits for it.
        self._dispatch_urc(line, None)

    def _to_pending(self, pending: _Pending, line: str) -> None:
        if pending.is_echo(line):
            return
        final = line in FINAL_OK or line.startswith(FINAL_ERRORS)
        if final and pending.probes and not any(x.startswith("+CMGS") for x in pending.lines):
            # Probed and no +CMGS yet: this may answer the probe, not the
            # send, so not even a +CMS error proves that the SMS stayed.
            pending.probe_answered = line
            pending.wake.set()
            return
        if final:
            pending.final = line
            pending.wake.set()
            return
        pending.lines.append(line)
        if pending.accept and line.startswith(pending.accept) and pending.accepted_at is None:
            pending.accepted_at = time.monotonic()
            pending.wake.set()

    def _dispatch_urc(self, line: str, pdu: str | None) -> None:
        try:
            self.on_unsolicited(line, pdu)
        except Exception:
            log.exception("unsolicited handler failed on %r", line)
