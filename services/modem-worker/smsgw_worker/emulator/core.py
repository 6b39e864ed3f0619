# Over 500 lines on purpose: one modem under one lock; power, the pty, the loop, parsing and dispatch share its state.
"""A GSM modem behind a pseudo-terminal, for tests, benchmarks and demos.

The emulator owns the master side of a pty; the slave side (or a symlink to
it, like /dev/serial/by-id/...) is the device a driver opens. One background
thread reads what the driver writes, answers like a 3GPP TS 27.007/27.005
modem in PDU mode, and runs timed events (status reports, USSD replies,
re-deliveries, vendor noise). Everything runs under one lock.

Here: power, the pty, the loop, parsing and dispatch. The AT commands are in
commands.py, the network side (sends, reports, arriving SMS, storage) in
network.py, the modem's data in state.py, and the test controls on
`Emulator` in emulator.py.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import re
import select
import threading
import time
import tty
from collections.abc import Callable
from typing import IO, Any, Self

from smsgw_worker import pdu as pducodec

from . import network
from .commands import COMMANDS, ICCID_HANDLER, basic
from .profiles import PROFILES, Profile
from .state import (
    CME_TEXT,
    CMS_TEXT,
    CTRL_Z,
    ESC,
    MEMORIES,
    Answer,
    CmeError,
    CmsError,
    Deferred,
    HeldPdu,
    Pending,
    Recent,
    State,
    Stored,
    Timer,
    UnknownCommand,
)

log = logging.getLogger(__name__)


class EmulatedModem:
    """The modem itself; `Emulator` (emulator.py) adds what tests do to it."""

    def __init__(
        self,
        profile: str | Profile = "generic",
        *,
        link: str | None = None,
        own_number: str | None = "+15550000001",
        imei: str = "356938035643809",
        iccid: str = "8901260000000000001",
        imsi: str = "310260000000001",
        operator: str = "Emu Mobile",
        send_latency: float = 0.0,
        report_delay: float = 0.2,
        report_status: int = 0,
        pin: str | None = None,
        smsc: str = "+15550000000",
        ack_timeout: float = 1.0,
        ack_retries: int = 3,
        ledger: str | None = None,
        keep: int = 1000,
        storage_file: str | None = None,
    ):
        if isinstance(profile, Profile):
            self.profile: Profile = profile  # e.g. dataclasses.replace(PROFILES["simcom"], ...)
        elif profile in PROFILES:
            self.profile = PROFILES[profile]
        else:
            raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
        self.link = link
        self.own_number = own_number
        self.imei = imei
        self.iccid = iccid
        self.imsi = imsi
        self.operator = operator
        self.send_latency = send_latency
        self.report_delay = report_delay
        self.report_status = report_status
        self.pin = pin
        self.smsc = smsc
        self.ack_timeout = ack_timeout
        self.ack_retries = ack_retries  # deliveries again without AT+CNMA before the network stores it
        self.rssi = 20
        self.quirks: set[str] = set(self.profile.quirks)
        self._ussd_menu = False  # a USSD session the network keeps open (+CUSD: 1)
        self.calls: Recent = Recent(keep)  # incoming calls: {"number", "rings", "outcome"}
        self._call: dict[str, Any] | None = None  # the one ringing now
        self._clip = False  # AT+CLIP=1: the caller's number after each RING
        self.registration = 1  # +CREG <stat>: registered, home network

        # What happened, for tests and the control API: the last `keep`
        # entries of each, and `.total` to count them all (state.Recent).
        self.sent: Recent = Recent(keep)
        # Every fault as it began and ended: {"fault", "event" ("start"/"end"),
        # "mode", "at" (time.time())}, so a test or bench can time recovery.
        self.fault_log: Recent = Recent(keep)
        # An append-only file of every PDU that left (one JSON line each):
        # the far end's record, kept outside any process a test kills.
        self.ledger = ledger
        self._ledger_file: IO[str] | None = None
        # The SIM's and the module's message storage are non-volatile: with a
        # file, what is stored outlives the process (a power cut: SIGKILL).
        self.storage_file = storage_file
        self.commands: Recent = Recent(keep)
        self.reports: Recent = Recent(keep)  # status reports generated, routed or not
        # Every +CMT/+CDS printed while AT+CSMS=1: {"kind", "pdu", "attempt"
        # (0 = first delivery), "at", "acked_at" (None until AT+CNMA),
        # "outcome" ("acked", "stored", "dropped" or None while pending)}.
        self.direct_deliveries: Recent = Recent(keep)

        self._lock = threading.RLock()
        self._sent_cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self._device: str | None = None
        self._events: list[Timer] = []
        self._event_seq = itertools.count()
        self._inbuf = bytearray()
        self._prompt: int | None = None  # TPDU length announced by AT+CMGS/CMGW
        self._cmgw_stat: int | None = None  # AT+CMGW's <stat> while its PDU is awaited; None: AT+CMGS
        self._pdu_buf = bytearray()
        self._busy = False  # a command is in progress (send latency)
        # A hang (emulator.py `hang`): "late" holds what the driver writes and
        # what the modem says until it ends, "swallow" loses both.
        self._hung = False
        self._hang_mode = "late"
        self._held_in = bytearray()
        self._held_out = bytearray()
        self._hang_on_submit: tuple[float, str] | None = None  # (seconds, mode) for the next PDU
        self._reboot_on_send = False  # the next AT+CMGS restarts the module instead of prompting
        self._sim_present = True
        self._pin_ok = pin is None
        self._pin_tries = 3
        self._sim_busy_until = 0.0
        self._sms_ready_at = 0.0
        self._booted = False
        self._next_mr = 0
        self._fail_sends: list[int | None] = []  # None: that send goes through
        self._lose_refs: list[str] = []  # final lines of sends that leave without +CMGS
        self._storage: dict[str, dict[int, Stored]] = {m: {} for m in MEMORIES}
        self._network: list[HeldPdu] = []  # waiting at the network for room in the modem
        self._pending_acks: list[Pending] = []
        self._st = self._fresh_state()

    # ------------------------------------------------------------------ life

    @property
    def device(self) -> str:
        if self.link:
            return self.link
        if self._device is None:
            raise RuntimeError("the emulator is not started")
        return self._device

    @property
    def node(self) -> str | None:
        """The pty's device node now (what the link points to); None before start."""
        return self._device

    def start(self) -> Self:
        with self._lock:
            if self._thread:
                raise RuntimeError("already started")
            self._open_pty()
            self._load_storage()
            self._power_up()
            if self.ledger:
                self._ledger_file = open(self.ledger, "a", encoding="utf-8")  # noqa: SIM115  (open for the run)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modem-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._close_pty()
            if self._ledger_file is not None:
                self._ledger_file.close()
                self._ledger_file = None

    def _load_storage(self) -> None:
        if not self.storage_file or not os.path.exists(self.storage_file):
            return
        with open(self.storage_file, encoding="utf-8") as f:
            saved = json.load(f)
        for mem, slots in saved.items():
            if mem in self._storage:
                self._storage[mem] = {int(idx): Stored(pdu, status) for idx, (pdu, status) in slots.items()}

    def save_storage(self) -> None:
        """Written whole and renamed into place after every change, before the
        modem says anything about it (+CMTI/+CDSI, OK to AT+CMGD): a kill
        leaves the old or the new storage, never half of one."""
        if not self.storage_file:
            return
        data = {mem: {idx: [m.pdu, m.status] for idx, m in slots.items()} for mem, slots in self._storage.items()}
        tmp = self.storage_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, self.storage_file)

    def record_sent(self, record: dict[str, Any]) -> None:
        """A PDU left for the network: kept in `sent` and, one line written
        and flushed as it happens, in the ledger file. A flush is enough for
        a process killed with SIGKILL (the kernel has the bytes); only a
        machine's power loss would need fsync."""
        self.sent.append(record)
        self._ledger_line("sent", record)
        self._sent_cond.notify_all()

    def record_report_handed_over(self, hexpdu: str) -> None:
        """A status report reached the modem (+CDS printed, or stored for
        +CDSI / a later read): from here on, keeping it is the gateway's job."""
        if self._ledger_file is None:
            return
        report = pducodec.decode(hexpdu)
        mr = report.reference if isinstance(report, pducodec.StatusReport) else None
        self._ledger_line("report", {"mr": mr, "pdu": hexpdu, "at": time.time()})

    def _ledger_line(self, kind: str, record: dict[str, Any]) -> None:
        if self._ledger_file is not None:
            self._ledger_file.write(json.dumps({"kind": kind, **record}, separators=(",", ":")) + "\n")
            self._ledger_file.flush()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw on our side too: the line discipline must neither echo nor turn
        # CR into LF before any driver has configured the port.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._device = os.ttyname(slave)
        if self.link:
            tmp = f"{self.link}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self._device, tmp)
            os.replace(tmp, self.link)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self.link and os.path.islink(self.link):
            os.unlink(self.link)

    def _fresh_state(self, cfun: int = 1) -> State:
        """The settings a power-up, ATZ or AT&F restores (the saved profile)."""
        return State(cfun=cfun, csms=self.profile.csms, cnmi=list(self.profile.cnmi))

    def _power_up(self) -> None:
        """What a power cycle does: volatile settings reset, boot noise, SIM busy."""
        self._st = self._fresh_state()
        self._clip = False
        self._call = None
        self._inbuf.clear()
        self._held_in.clear()
        self._held_out.clear()
        self._hung = False
        self._prompt = None
        self._busy = False
        self._pin_ok = self.pin is None
        self._events = [e for e in self._events if e.kind == "persistent"]
        heapq.heapify(self._events)
        self._booted = False
        network.abandon_acks(self)  # after _booted: they wait at the network until boot
        for line in self.profile.boot_lines:
            self._urc(line)
        busy = self.profile.sim_busy_seconds
        self._sim_busy_until = time.monotonic() + busy
        self._sms_ready_at = self._sim_busy_until + self.profile.sms_ready_seconds
        self._schedule(busy, self._boot_done)
        if self.profile.noise_line and self.profile.noise_interval:
            self._schedule(self.profile.noise_interval, self._noise)

    def _boot_done(self) -> None:
        self._booted = True
        late = self.profile.sms_ready_lines if self.profile.sms_ready_seconds > 0 else ()
        if self._sim_present:
            for line in self.profile.ready_lines:
                if line == "+CPIN: READY" and not self._pin_ok:
                    line = "+CPIN: SIM PIN"
                if line not in late:
                    self._urc(line)
        if self.profile.sms_ready_seconds > 0:
            self._schedule(max(0.0, self._sms_ready_at - time.monotonic()), self._sms_ready)
        network.pump(self)

    def _sms_ready(self) -> None:
        if self._sim_present:
            for line in self.profile.sms_ready_lines:
                self._urc(line)
        network.pump(self)

    def _need_sms_ready(self) -> None:
        """+CMS ERROR while the SMS service is still starting after SIM ready."""
        if time.monotonic() < self._sms_ready_at:
            raise CmsError(self.profile.sms_not_ready_error)

    def _noise(self) -> None:
        self._urc(self.profile.noise_line.format(rssi=self.rssi))
        self._schedule(self.profile.noise_interval, self._noise)

    # --------------------------------------------------------------- the loop

    def _schedule(self, delay: float, action: Callable[[], None], kind: str = "volatile") -> Timer:
        """Run `action` on the loop after `delay` s; "persistent" ones survive a power cycle."""
        timer = Timer(time.monotonic() + delay, next(self._event_seq), action, kind)
        heapq.heappush(self._events, timer)
        return timer

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                while self._events and self._events[0].due <= now:
                    timer = heapq.heappop(self._events)
                    if timer.live:
                        try:
                            timer.action()
                        except Exception:  # an event must not kill the modem
                            log.exception("emulator event failed")
                timeout = 0.05
                if self._events:
                    timeout = max(0.0, min(timeout, self._events[0].due - time.monotonic()))
                master = self._master
            if master is None:
                time.sleep(timeout or 0.01)
                continue
            try:
                ready, _, _ = select.select([master], [], [], timeout)
            except (OSError, ValueError):
                continue  # closed under us by unplug()
            if not ready:
                continue
            with self._lock:
                if self._master != master:
                    continue
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    # EIO: no process holds the slave open. We keep our own
                    # slave fd, so this is rare; back off briefly.
                    time.sleep(0.01)
                    continue
                if self._hung:
                    if self._hang_mode == "late":
                        self._held_in += data
                    continue
                self._inbuf += data
                try:
                    self._consume()
                except Exception:
                    log.exception("emulator failed on input %r", bytes(data))
                    self._final_error(None)

    def _write(self, data: bytes) -> None:
        if self._hung:
            if self._hang_mode == "late":
                self._held_out += data
            return
        if self._master is None:
            return
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            # Nobody reads the port and its buffer is full: a real UART drops too.
            pass

    def _set_hung(self, on: bool, mode: str = "late") -> None:
        """Start or end a hang. Ending a "late" one prints what the modem
        held back, then runs the input it held, in the order it came."""
        if mode not in ("late", "swallow"):
            raise ValueError(f"unknown hang mode {mode!r}; choose 'late' or 'swallow'")
        if on:
            if not self._hung:
                self._hung, self._hang_mode = True, mode
                self.fault_log.append({"fault": "hang", "event": "start", "mode": mode, "at": time.time()})
                if mode == "swallow":
                    self._inbuf.clear()
            return
        if not self._hung:
            return
        self._hung = False
        self.fault_log.append({"fault": "hang", "event": "end", "mode": self._hang_mode, "at": time.time()})
        out, self._held_out = bytes(self._held_out), bytearray()
        held, self._held_in = bytes(self._held_in), bytearray()
        self._write(out)
        self._inbuf += held
        self._consume()
        # What the network held back meanwhile (a hung modem takes nothing).
        self._schedule(0.05, lambda: network.pump(self))

    def _hang_for(self, seconds: float, mode: str) -> None:
        self._set_hung(True, mode)
        self._schedule(seconds, lambda: self._set_hung(False), "persistent")

    def _urc(self, line: str) -> None:
        self._write(f"\r\n{line}\r\n".encode())

    def _lines(self, *lines: str) -> None:
        self._write(b"".join(f"\r\n{line}\r\n".encode() for line in lines))

    def _block(self, lines: list[str]) -> None:
        """One information response: its lines separated by a single CRLF."""
        self._write(("\r\n" + "\r\n".join(lines) + "\r\n").encode())

    def _ok(self) -> None:
        self._lines("OK")

    def _final_error(self, err: Exception | None) -> None:
        mode = self._st.cmee
        if isinstance(err, UnknownCommand):
            self._lines(self.profile.unknown_reply)
        elif isinstance(err, CmeError) and mode:
            self._lines(f"+CME ERROR: {err.code if mode == 1 else CME_TEXT.get(err.code, 'unknown')}")
        elif isinstance(err, CmsError) and mode:
            self._lines(f"+CMS ERROR: {err.code if mode == 1 else CMS_TEXT.get(err.code, 'unknown error')}")
        else:
            self._lines("ERROR")

    # ---------------------------------------------------------------- parsing

    def _consume(self) -> None:
        while self._inbuf and not self._busy:
            if self._prompt is not None:
                if not self._consume_pdu(self._prompt):
                    return
                continue
            # Modems act on the command line when they see S3 (CR).
            idx = self._inbuf.find(b"\r")
            if idx < 0:
                # Keep partial input; drop absurdly long garbage.
                if len(self._inbuf) > 4096:
                    self._inbuf.clear()
                return
            raw = bytes(self._inbuf[: idx + 1])
            del self._inbuf[: idx + 1]
            if self._st.echo:
                self._write(raw)
            line = raw.decode("latin-1").strip(" \r\n\t\x1b\x00")
            if not line:
                continue
            self.commands.append(line)
            if line[:2].upper() != "AT":
                # Garbage from the driver side: real modems ignore it.
                continue
            self._execute(line[2:])

    def _consume_pdu(self, length: int) -> bool:
        for i, b in enumerate(self._inbuf):
            if b in (CTRL_Z, ESC):
                chunk = bytes(self._inbuf[:i])
                del self._inbuf[: i + 1]
                if self._st.echo:
                    self._write(chunk)
                self._pdu_buf += chunk
                text = self._pdu_buf.decode("latin-1")
                self._prompt = None
                self._pdu_buf.clear()
                if b == ESC:
                    self._ok()  # ESC cancels the send (TS 27.005 3.5.1)
                elif self._cmgw_stat is None:
                    network.submit(self, "".join(text.split()), length)
                else:
                    network.write_to_storage(self, "".join(text.split()), length, self._cmgw_stat)
                return True
        if self._st.echo:
            self._write(bytes(self._inbuf))
        self._pdu_buf += self._inbuf
        self._inbuf.clear()
        return False

    def _split(self, rest: str) -> list[str]:
        """Split 'E0V1+CMEE=1;+CNMI=2,1' into single commands."""
        cmds: list[str] = []
        i = 0
        while i < len(rest):
            ch = rest[i]
            if ch in " ;":
                i += 1
            elif ch in "+^$#*%":
                j = i + 1
                in_quote = False
                while j < len(rest) and (in_quote or rest[j] != ";"):
                    if rest[j] == '"':
                        in_quote = not in_quote
                    j += 1
                cmds.append(rest[i:j])
                i = j
            else:
                m = re.match(r"&?[A-Za-z]\d*|S\d+(=\d+|\?)", rest[i:], re.I)
                if not m:
                    raise UnknownCommand()
                cmds.append(m.group(0))
                i += len(m.group(0))
        return cmds

    def _execute(self, rest: str) -> None:
        locked = "pin_everywhere" in self.quirks and self._sim_present and not self._pin_ok
        if locked and not rest.upper().lstrip().startswith("+CPIN"):
            # Such firmware prints the numeric code even with AT+CMEE=0.
            self._lines(f"+CME ERROR: {11 if self._pin_tries > 0 else 12}")
            return
        try:
            cmds = self._split(rest)
            for cmd in cmds:
                out = self._dispatch(cmd)
                if isinstance(out, Deferred):
                    return
                if out:
                    self._block(out)
        except (CmeError, CmsError, UnknownCommand) as err:
            self._final_error(err)
            return
        self._ok()

    # -------------------------------------------------------------- commands

    def _dispatch(self, cmd: str) -> Answer:
        upper = cmd.upper()
        if not upper.startswith(("+", "^", "$", "#", "*", "%")):
            return basic(self, upper)
        m = re.match(r"([+^$#*%][A-Z0-9]+)(=\?|\?|=)?(.*)$", cmd, re.I | re.S)
        if not m:
            raise UnknownCommand()
        name, op, arg = m.group(1).upper(), m.group(2) or "", m.group(3)
        handler = COMMANDS.get(name)
        if name == self.profile.iccid_command:
            handler = ICCID_HANDLER
        elif name in ("+CCID", "^ICCID", "+QCCID", "+ICCID"):
            handler = None
        if handler is None:
            if name in self.profile.accepted:
                return []
            raise UnknownCommand()
        return handler(self, op, arg)

    def _reg_stat(self) -> int:
        if self._st.cfun != 1 or not self._sim_present or not self._pin_ok:
            return 0
        return self.registration

    def _capacity(self, mem: str) -> int:
        return self.profile.storage_size if mem != "ME" else 100
