"""A GSM modem behind a pseudo-terminal, for tests, benchmarks and demos.

The emulator owns the master side of a pty; the slave side (or a symlink to
it, like /dev/serial/by-id/...) is the device a driver opens. One background
thread reads what the driver writes, answers like a 3GPP TS 27.007/27.005
modem in PDU mode, and runs timed events (status reports, USSD replies,
re-deliveries, vendor noise). Test controls are methods guarded by one lock.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import re
import select
import threading
import time
import tty
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from .. import pdu as pducodec
from .profiles import PROFILES, Profile

log = logging.getLogger(__name__)

CTRL_Z = 0x1A
ESC = 0x1B

# Verbose (+CMEE=2) error texts as the emulated firmware prints them. Kept
# apart from errors.CME_TEXT/CMS_TEXT on purpose: the emulator stands for
# independent hardware (vendors differ in wording and capitalisation), and
# sharing the driver's tables would make the verbose-mode tests circular.
CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    16: "incorrect password",
    30: "no network service",
    100: "unknown",
}
CMS_TEXT = {
    21: "Short message transfer rejected",
    27: "Destination out of service",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Congestion",
    300: "ME failure",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    314: "SIM busy",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}

# Message status in storage (TS 27.005 <stat> in PDU mode).
REC_UNREAD, REC_READ, STO_UNSENT, STO_SENT = 0, 1, 2, 3
MEMORIES = ("SM", "ME", "SR")


class CmeError(Exception):
    def __init__(self, code: int):
        self.code = code


class CmsError(Exception):
    def __init__(self, code: int):
        self.code = code


class _Unknown(Exception):
    pass


@dataclass
class Stored:
    pdu: str  # with SMSC part
    status: int


@dataclass
class _Pending:
    """An unsolicited +CMT/+CDS that waits for AT+CNMA."""

    lines: list[str]
    fallback: Callable[[], None]
    attempts: int = 0
    event: object = None
    record: dict = field(default_factory=dict)  # its entry in Emulator.direct_deliveries


@dataclass
class _State:
    """Settings a power cycle resets."""

    echo: bool = True
    cmee: int = 0
    cmgf: int = 0
    csms: int = 0
    cnmi: list[int] = field(default_factory=lambda: [2, 1, 0, 0, 0])
    creg: int = 0
    cereg: int = 0
    cgreg: int = 0
    cscs: str = "IRA"
    cfun: int = 1
    mem: list[str] = field(default_factory=lambda: ["SM", "SM", "SM"])


class Emulator:
    def __init__(
        self,
        profile: "str | Profile" = "generic",
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
        self.registration = 1  # +CREG <stat>: registered, home network

        self.sent: list[dict] = []
        self.commands: list[str] = []
        self.reports: list[dict] = []  # status reports generated, routed or not
        # Every +CMT/+CDS printed while AT+CSMS=1: {"kind", "pdu", "attempt"
        # (0 = first delivery), "at", "acked_at" (None until AT+CNMA),
        # "outcome" ("acked", "stored", "dropped" or None while pending)}.
        self.direct_deliveries: list[dict] = []

        self._lock = threading.RLock()
        self._sent_cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self._device: str | None = None
        self._events: list = []
        self._event_seq = itertools.count()
        self._inbuf = bytearray()
        self._prompt: int | None = None  # TPDU length announced by AT+CMGS/CMGW
        self._prompt_for = "send"  # or ("write", <stat>)
        self._pdu_buf = bytearray()
        self._busy = False  # a command is in progress (send latency)
        self._hung = False
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
        self._network: list[tuple[str, str]] = []  # (kind, pdu) waiting for room
        self._pending_acks: list[_Pending] = []
        self._st = self._fresh_state()

    # ------------------------------------------------------------------ life

    @property
    def device(self) -> str:
        if self.link:
            return self.link
        if self._device is None:
            raise RuntimeError("the emulator is not started")
        return self._device

    def start(self) -> "Emulator":
        with self._lock:
            if self._thread:
                raise RuntimeError("already started")
            self._open_pty()
            self._power_up()
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

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc) -> None:
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

    def _fresh_state(self, cfun: int = 1) -> _State:
        """The settings a power-up, ATZ or AT&F restores (the saved profile)."""
        return _State(cfun=cfun, csms=self.profile.csms, cnmi=list(self.profile.cnmi))

    def _power_up(self) -> None:
        """What a power cycle does: volatile settings reset, boot noise, SIM busy."""
        self._st = self._fresh_state()
        self._inbuf.clear()
        self._prompt = None
        self._busy = False
        self._pin_ok = self.pin is None
        self._events = [e for e in self._events if e[3] == "persistent"]
        heapq.heapify(self._events)
        self._booted = False
        self._abandon_acks()  # after _booted: they wait at the network until boot
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
        self._pump_network()

    def _sms_ready(self) -> None:
        if self._sim_present:
            for line in self.profile.sms_ready_lines:
                self._urc(line)
        self._pump_network()

    def _need_sms_ready(self) -> None:
        """+CMS ERROR while the SMS service is still starting after SIM ready."""
        if time.monotonic() < self._sms_ready_at:
            raise CmsError(self.profile.sms_not_ready_error)

    def _noise(self) -> None:
        self._urc(self.profile.noise_line.format(rssi=self.rssi))
        self._schedule(self.profile.noise_interval, self._noise)

    # --------------------------------------------------------------- the loop

    def _schedule(self, delay: float, fn: Callable[[], None], kind: str = "volatile"):
        entry = [time.monotonic() + delay, next(self._event_seq), fn, kind, True]
        heapq.heappush(self._events, entry)
        return entry

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                while self._events and self._events[0][0] <= now:
                    entry = heapq.heappop(self._events)
                    if entry[4]:
                        try:
                            entry[2]()
                        except Exception:  # an event must not kill the modem
                            log.exception("emulator event failed")
                timeout = 0.05
                if self._events:
                    timeout = max(0.0, min(timeout, self._events[0][0] - time.monotonic()))
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
                    continue
                self._inbuf += data
                try:
                    self._consume()
                except Exception:
                    log.exception("emulator failed on input %r", bytes(data))
                    self._final_error(None)

    def _write(self, data: bytes) -> None:
        if self._master is None or self._hung:
            return
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            # Nobody reads the port and its buffer is full: a real UART drops too.
            pass

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
        if isinstance(err, _Unknown):
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
                if not self._consume_pdu():
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
            if not line[:2].upper() == "AT":
                # Garbage from the driver side: real modems ignore it.
                continue
            self._execute(line[2:])

    def _consume_pdu(self) -> bool:
        for i, b in enumerate(self._inbuf):
            if b in (CTRL_Z, ESC):
                chunk = bytes(self._inbuf[:i])
                del self._inbuf[: i + 1]
                if self._st.echo:
                    self._write(chunk)
                self._pdu_buf += chunk
                text = self._pdu_buf.decode("latin-1")
                length = self._prompt
                self._prompt = None
                self._pdu_buf.clear()
                if b == ESC:
                    self._ok()  # ESC cancels the send (TS 27.005 3.5.1)
                elif self._prompt_for == "send":
                    self._submit("".join(text.split()), length)
                else:
                    self._write_to_storage("".join(text.split()), length, self._prompt_for[1])
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
                    raise _Unknown()
                cmds.append(m.group(0))
                i += len(m.group(0))
        return cmds

    def _execute(self, rest: str) -> None:
        try:
            cmds = self._split(rest)
            for cmd in cmds:
                out = self._dispatch(cmd)
                if out is _DEFERRED:
                    return
                if out:
                    self._block(out)
        except (CmeError, CmsError, _Unknown) as err:
            self._final_error(err)
            return
        self._ok()

    # -------------------------------------------------------------- commands

    def _dispatch(self, cmd: str):
        upper = cmd.upper()
        if not upper.startswith(("+", "^", "$", "#", "*", "%")):
            return self._basic(upper)
        m = re.match(r"([+^$#*%][A-Z0-9]+)(=\?|\?|=)?(.*)$", cmd, re.I | re.S)
        if not m:
            raise _Unknown()
        name, op, arg = m.group(1).upper(), m.group(2) or "", m.group(3)
        handler = _COMMANDS.get(name)
        if name == self.profile.iccid_command:
            handler = Emulator._cmd_iccid
        elif name in ("+CCID", "^ICCID", "+QCCID", "+ICCID"):
            handler = None
        if handler is None:
            if name in self.profile.accepted:
                return []
            raise _Unknown()
        return handler(self, op, arg)

    def _basic(self, cmd: str):
        if cmd in ("", "Q0", "V1", "&F", "&F0", "&C1", "&D0", "&D1", "&D2", "&W", "X4") or cmd.startswith("S"):
            if cmd.startswith("&F"):
                self._st = self._fresh_state(self._st.cfun)
                self._abandon_acks()
            return []
        if cmd in ("E0", "E1", "E"):
            self._st.echo = cmd == "E1"
            return []
        if cmd in ("Z", "Z0"):
            self._st = self._fresh_state(self._st.cfun)
            self._abandon_acks()
            return []
        if cmd in ("I", "I0"):
            p = self.profile
            return [f"Manufacturer: {p.manufacturer}", f"Model: {p.model}", f"Revision: {p.revision}", f"IMEI: {self.imei}"]
        raise _Unknown()

    # Each handler takes (op, arg): op is "", "?", "=?" or "=".

    def _need_sim(self, sms: bool = False) -> None:
        err = CmsError if sms else CmeError
        if not self._sim_present:
            raise err(310 if sms else 10)
        if time.monotonic() < self._sim_busy_until:
            raise err(314 if sms else 14)
        if not self._pin_ok:
            raise err(311 if sms else 11)
        if sms:
            self._need_sms_ready()

    def _cmd_cmee(self, op, arg):
        if op == "?":
            return [f"+CMEE: {self._st.cmee}"]
        if op == "=?":
            return ["+CMEE: (0-2)"]
        if op == "=" and arg.strip() in ("0", "1", "2"):
            self._st.cmee = int(arg)
            return []
        raise CmeError(3)

    def _cmd_cfun(self, op, arg):
        if op == "?":
            return [f"+CFUN: {self._st.cfun}"]
        if op == "=?":
            return ["+CFUN: (0,1,4),(0,1)"]
        args = _ints(arg)
        if not args or args[0] not in (0, 1, 4):
            raise CmeError(3)
        if len(args) > 1 and args[1] == 1:
            # Reset: answer OK, then the module reboots.
            self._lines("OK")
            self._schedule(0.05, self._power_up)
            return _DEFERRED
        self._st.cfun = args[0]
        return []

    def _cmd_cpin(self, op, arg):
        if not self._sim_present:
            raise CmeError(10)
        if time.monotonic() < self._sim_busy_until:
            raise CmeError(14)
        if op == "?":
            if self._pin_tries <= 0:
                return ["+CPIN: SIM PUK"]
            return ["+CPIN: READY" if self._pin_ok else "+CPIN: SIM PIN"]
        if op == "=?":
            return []
        if op == "=":
            given = _unquote(arg.split(",")[0])
            if self._pin_ok:
                raise CmeError(3)
            if self._pin_tries <= 0:
                raise CmeError(12)
            if given != self.pin:
                self._pin_tries -= 1
                raise CmeError(16)
            self._pin_ok = True
            self._pin_tries = 3
            self._schedule(0.05, self._pump_network)
            return []
        raise CmeError(3)

    def _cmd_cgmi(self, op, arg):
        return [] if op == "=?" else [self.profile.manufacturer]

    def _cmd_cgmm(self, op, arg):
        return [] if op == "=?" else [self.profile.model]

    def _cmd_cgmr(self, op, arg):
        return [] if op == "=?" else [self.profile.revision]

    def _cmd_cgsn(self, op, arg):
        return [] if op == "=?" else [self.imei]

    def _cmd_cimi(self, op, arg):
        if op == "=?":
            return []
        self._need_sim()
        return [self.imsi]

    def _cmd_iccid(self, op, arg):
        if op == "=?":
            return []
        if not self._sim_present:
            raise CmeError(10)
        return [f"{self.profile.iccid_prefix}{self.iccid}"]

    def _cmd_cnum(self, op, arg):
        if op == "=?":
            return []
        self._need_sim()
        if not self.own_number:
            return []
        toa = 145 if self.own_number.startswith("+") else 129
        return [f'+CNUM: "","{self.own_number}",{toa}']

    def _cmd_csq(self, op, arg):
        if op == "=?":
            return ["+CSQ: (0-31,99),(0-7,99)"]
        rssi = self.rssi if self._st.cfun == 1 else 99
        return [f"+CSQ: {rssi},99"]

    def _reg_stat(self) -> int:
        if self._st.cfun != 1 or not self._sim_present or not self._pin_ok:
            return 0
        return self.registration

    def _cmd_cops(self, op, arg):
        if op == "?":
            if self._reg_stat() not in (1, 5):
                return ["+COPS: 0"]
            return [f'+COPS: 0,0,"{self.operator}",7']
        if op == "=?":
            return [f'+COPS: (2,"{self.operator}","Emu","00101",7),,(0-4),(0-2)']
        return []

    def _cmd_cscs(self, op, arg):
        if op == "?":
            return [f'+CSCS: "{self._st.cscs}"']
        if op == "=?":
            return ['+CSCS: ("IRA","GSM","UCS2")']
        value = _unquote(arg)
        if value.upper() not in ("IRA", "GSM", "UCS2"):
            raise CmeError(4)
        self._st.cscs = value.upper()
        return []

    def _cmd_cmgf(self, op, arg):
        if op == "?":
            return [f"+CMGF: {self._st.cmgf}"]
        if op == "=?":
            return ["+CMGF: (0)"]
        if arg.strip() == "0":
            return []
        # Text mode is deliberately absent: the gateway speaks PDU mode, and
        # plenty of real modems (and firmwares) only do PDU mode too.
        raise CmsError(303)

    def _cmd_csms(self, op, arg):
        if op == "?":
            return [f"+CSMS: {self._st.csms},1,1,1"]
        if op == "=?":
            return ["+CSMS: (0,1)"]
        if arg.strip() not in ("0", "1"):
            raise CmsError(303)
        self._need_sms_ready()
        self._st.csms = int(arg)
        return ["+CSMS: 1,1,1"]

    def _cmd_cnmi(self, op, arg):
        if op == "?":
            return ["+CNMI: " + ",".join(str(v) for v in self._st.cnmi)]
        if op == "=?":
            return ["+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)"]
        self._need_sms_ready()
        values = [v.strip() for v in arg.split(",")]
        new = list(self._st.cnmi)
        limits = (2, 3, 2, 2, 1)
        for i, v in enumerate(values[:5]):
            if v == "":
                continue
            if not v.isdigit() or int(v) > limits[i]:
                raise CmsError(303)
            new[i] = int(v)
        self._st.cnmi = new
        return []

    def _cmd_cpms(self, op, arg):
        if op == "=?":
            return ['+CPMS: ("SM","ME","SR"),("SM","ME"),("SM","ME")']
        if op == "?":
            self._need_sms_ready()
            parts = []
            for m in self._st.mem:
                parts.append(f'"{m}",{len(self._storage[m])},{self._capacity(m)}')
            return ["+CPMS: " + ",".join(parts)]
        self._need_sim(sms=True)
        names = [_unquote(v).upper() for v in arg.split(",") if v.strip()]
        if not names or len(names) > 3:
            raise CmsError(302)
        for i, n in enumerate(names):
            n = "SM" if n == "MT" else n
            if n not in MEMORIES or (i > 0 and n == "SR"):
                raise CmsError(302)
            self._st.mem[i] = n
        counts = [f"{len(self._storage[m])},{self._capacity(m)}" for m in self._st.mem]
        return ["+CPMS: " + ",".join(counts)]

    def _capacity(self, mem: str) -> int:
        return self.profile.storage_size if mem != "ME" else 100

    def _cmd_csca(self, op, arg):
        if op == "?":
            return [f'+CSCA: "{self.smsc}",{145 if self.smsc.startswith("+") else 129}']
        if op == "=":
            self.smsc = _unquote(arg.split(",")[0])
        return []

    def _cmd_cmgs(self, op, arg):
        if op == "=?":
            return []
        if op != "=":
            raise CmsError(302)
        self._need_sim(sms=True)
        try:
            length = int(arg.split(",")[0])
        except ValueError:
            raise CmsError(304) from None
        if not 7 <= length <= 164:
            raise CmsError(304)
        self._prompt = length
        self._prompt_for = "send"
        self._pdu_buf.clear()
        self._write(b"\r\n> ")
        return _DEFERRED

    def _cmd_cmgw(self, op, arg):
        if op == "=?":
            return []
        if op != "=":
            raise CmsError(302)
        self._need_sim(sms=True)
        args = _ints(arg)
        if not args or not 7 <= args[0] <= 164:
            raise CmsError(304)
        stat = args[1] if len(args) > 1 else STO_UNSENT
        if stat not in (REC_UNREAD, REC_READ, STO_UNSENT, STO_SENT):
            raise CmsError(304)
        self._prompt = args[0]
        self._prompt_for = ("write", stat)
        self._pdu_buf.clear()
        self._write(b"\r\n> ")
        return _DEFERRED

    def _write_to_storage(self, hexpdu: str, length: int, stat: int) -> None:
        try:
            raw = bytes.fromhex(hexpdu)
            if not raw or len(raw) - raw[0] - 1 != length:
                raise ValueError("length mismatch")
            pducodec.decode(hexpdu)
        except ValueError:
            self._final_error(CmsError(304))
            return
        mem = self._st.mem[1]
        idx = self._store(mem, hexpdu.upper())
        if idx is None:
            self._final_error(CmsError(322))
            return
        self._storage[mem][idx].status = stat
        self._lines(f"+CMGW: {idx}", "OK")

    def _submit(self, hexpdu: str, length: int) -> None:
        try:
            raw = bytes.fromhex(hexpdu)
            smsc_len = raw[0]
            if len(raw) - smsc_len - 1 != length:
                raise pducodec.PduError(
                    f"AT+CMGS said {length} octets, the PDU has {len(raw) - smsc_len - 1}"
                )
            decoded = pducodec.decode(hexpdu)
            if not isinstance(decoded, pducodec.Submit):
                raise pducodec.PduError("not an SMS-SUBMIT")
        except (ValueError, IndexError) as exc:
            log.info("emulator rejected PDU %s: %s", hexpdu, exc)
            self._final_error(CmsError(304))
            return
        if self._st.cfun != 1 or self.registration not in (1, 5):
            self._final_error(CmsError(331))
            return
        fail = self._fail_sends.pop(0) if self._fail_sends else None
        lost = self._lose_refs.pop(0) if fail is None and self._lose_refs else None
        self._busy = True

        def finish():
            self._busy = False
            if fail is not None:
                self._final_error(CmsError(fail))
            else:
                mr = self._next_mr
                self._next_mr = (mr + 1) % 256
                concat = decoded.concat
                record = {
                    "number": decoded.recipient,
                    "text": decoded.text,
                    "encoding": decoded.encoding,
                    "concat": (concat.ref, concat.total, concat.seq) if concat else None,
                    "mr": mr,
                    "pdu": hexpdu,
                    "status_report_requested": decoded.status_report_requested,
                    "at": time.time(),
                }
                self.sent.append(record)
                self._sent_cond.notify_all()
                if lost is None:
                    self._lines(f"+CMGS: {mr}", "OK")
                else:
                    self._lines(lost)  # it left, but the reference never reaches the TE
                if decoded.status_report_requested:
                    submitted = datetime.now(timezone.utc).replace(microsecond=0)
                    self._schedule(
                        self.report_delay,
                        lambda: self._status_report(mr, decoded.recipient, submitted),
                        "persistent",
                    )
            self._consume()  # commands that queued up behind the send

        if self.send_latency > 0:
            self._schedule(self.send_latency, finish)
        else:
            finish()

    def _stat_filter(self, arg: str) -> int:
        value = arg.strip() or "0"
        words = {"REC UNREAD": 0, "REC READ": 1, "STO UNSENT": 2, "STO SENT": 3, "ALL": 4}
        if value.startswith('"'):
            raise CmsError(304)  # text-mode words are not valid in PDU mode
        if value.isdigit() and int(value) <= 4:
            return int(value)
        if value.upper() in words:
            raise CmsError(304)
        raise CmsError(302)

    def _cmd_cmgl(self, op, arg):
        if op == "=?":
            return ["+CMGL: (0-4)"]
        self._need_sim(sms=True)
        want = self._stat_filter(arg)
        out = []
        store = self._storage[self._st.mem[0]]
        for idx in sorted(store):
            m = store[idx]
            if want != 4 and m.status != want:
                continue
            out += [f"+CMGL: {idx},{m.status},,{_tpdu_len(m.pdu)}", m.pdu]
            if m.status == REC_UNREAD:
                m.status = REC_READ
        return out

    def _cmd_cmgr(self, op, arg):
        if op == "=?":
            return []
        self._need_sim(sms=True)
        try:
            idx = int(arg.strip())
        except ValueError:
            raise CmsError(321) from None
        m = self._storage[self._st.mem[0]].get(idx)
        if m is None:
            raise CmsError(321)
        out = [f"+CMGR: {m.status},,{_tpdu_len(m.pdu)}", m.pdu]
        if m.status == REC_UNREAD:
            m.status = REC_READ
        return out

    def _cmd_cmgd(self, op, arg):
        if op == "=?":
            return ["+CMGD: (" + ",".join(str(i) for i in sorted(self._storage[self._st.mem[0]])) + "),(0-4)"]
        self._need_sim(sms=True)
        args = _ints(arg)
        if not args:
            raise CmsError(321)
        store = self._storage[self._st.mem[0]]
        flag = args[1] if len(args) > 1 else 0
        if flag == 0:
            store.pop(args[0], None)  # deleting an empty slot is OK on real modems
        else:
            doomed = {1: {REC_READ}, 2: {REC_READ, STO_SENT}, 3: {REC_READ, STO_SENT, STO_UNSENT}}
            for idx in list(store):
                if flag == 4 or store[idx].status in doomed.get(flag, set()):
                    del store[idx]
        self._schedule(0.01, self._pump_network)
        return []

    def _cmd_cnma(self, op, arg):
        if op == "=?":
            return ["+CNMA: (0-2)"]
        if self._st.csms != 1 or not self._pending_acks:
            raise CmsError(340)
        pending = self._pending_acks.pop(0)
        if pending.event is not None:
            pending.event[4] = False
        pending.record.update(acked_at=time.time(), outcome="acked")
        # The network hands over the next message it held back.
        self._schedule(0.01, self._pump_network)
        return []

    def _cmd_cusd(self, op, arg):
        if op == "?":
            return ["+CUSD: 1"]
        if op == "=?":
            return ["+CUSD: (0-2)"]
        parts = [p.strip() for p in arg.split(",")]
        if not parts or parts[0] not in ("0", "1", "2"):
            raise CmeError(3)
        if len(parts) > 1 and parts[1]:
            self._need_sim()
            code = _unquote(parts[1])
            dcs = parts[2] if len(parts) > 2 and parts[2] else "15"
            if code == "*100#":
                reply = "Your balance is 12.34"
            else:
                reply = f"Unknown service code {code}"
            self._schedule(0.1, lambda: self._urc(f'+CUSD: 0,"{reply}",{dcs}'))
        return []

    def _cmd_cbc(self, op, arg):
        return [] if op == "=?" else ["+CBC: 0,100,4200"]

    def _cmd_clac(self, op, arg):
        return sorted(_COMMANDS)

    # --------------------------------------------------------- network side

    def _status_report(self, mr: int, recipient: str, submitted: datetime) -> None:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        status = self.report_status
        hexpdu = pducodec.encode_status_report(mr, recipient, status, submitted, now, smsc=self.smsc)
        self.reports.append({"mr": mr, "number": recipient, "status": status, "pdu": hexpdu})
        self._network.append(("report", hexpdu))
        self._pump_network()

    def _pump_network(self) -> None:
        """Hand over what the network holds, as far as the modem can take it."""
        if self._master is None or not self._booted or not self._sim_present or not self._pin_ok:
            return
        if time.monotonic() < max(self._sim_busy_until, self._sms_ready_at):
            return
        waiting, self._network = self._network, []
        for kind, hexpdu in waiting:
            if not self._route(kind, hexpdu):
                self._network.append((kind, hexpdu))

    def _route(self, kind: str, hexpdu: str, force_store: bool = False) -> bool:
        """Deliver one PDU per +CNMI; False if there is no room for it yet.

        With AT+CSMS=1 only one +CMT/+CDS is outstanding at a time (TS 27.005
        3.4.1: no new one before the previous is acknowledged); the next
        waits at the network until AT+CNMA."""
        mode, mt, _bm, ds, _bfr = self._st.cnmi
        force_store = force_store or kind in ("sms-store", "report-store")
        length = _tpdu_len(hexpdu)
        awaiting_ack = self._st.csms == 1 and bool(self._pending_acks)
        if kind in ("report", "report-store"):
            if ds == 0 and not force_store:
                return True  # the TE asked for no reports: the network's copy is dropped
            if ds == 1 and not force_store:
                if awaiting_ack:
                    return False
                self._direct("report", [f"+CDS: {length}", hexpdu],
                             lambda: self._network.append(("report-store", hexpdu)) or self._pump_network())
                return True
            idx = self._store(self.profile.report_memory, hexpdu)
            if idx is None:
                return False
            if ds != 0:
                self._urc(f'+CDSI: "{self.profile.report_memory}",{idx}')
            return True
        if mt in (2, 3) and not force_store:
            if awaiting_ack:
                return False
            self._direct(
                "sms", [f"+CMT: ,{length}", hexpdu],
                lambda: self._network.append(("sms-store", hexpdu)) or self._pump_network(),
            )
            return True
        mem = self._st.mem[2]
        idx = self._store(mem, hexpdu)
        if idx is None:
            return False
        if mt != 0:
            self._urc(f'+CMTI: "{mem}",{idx}')
        return True

    def _direct(self, kind: str, lines: list[str], fallback: Callable[[], None]) -> None:
        self._block(lines)
        if self._st.csms != 1:
            return
        pending = _Pending(lines, fallback)
        self._pending_acks.append(pending)
        self._arm_ack(pending, kind)

    def _arm_ack(self, pending: _Pending, kind: str) -> None:
        record = {"kind": kind, "pdu": pending.lines[1], "attempt": pending.attempts, "at": time.time(),
                  "acked_at": None, "outcome": None}
        self.direct_deliveries.append(record)
        pending.record = record

        def expired():
            if pending not in self._pending_acks:
                return
            pending.attempts += 1
            if pending.attempts > self.ack_retries:
                # The network gives up on direct delivery and stores it.
                self._pending_acks.remove(pending)
                record["outcome"] = "stored"
                pending.fallback()
                return
            # No +CNMA in time: the network delivers the same message again.
            record["outcome"] = "repeated"
            self._block(pending.lines)
            self._arm_ack(pending, kind)
        pending.event = self._schedule(self.ack_timeout, expired)

    def _abandon_acks(self) -> None:
        """A reset while +CMT/+CDS wait for AT+CNMA: unacknowledged, so the
        network still holds them (and stores them once it can)."""
        pending, self._pending_acks = self._pending_acks, []
        for p in pending:
            if p.event is not None:
                p.event[4] = False
            p.record["outcome"] = "stored"
            p.fallback()

    def _store(self, mem: str, hexpdu: str) -> int | None:
        store = self._storage[mem]
        cap = self._capacity(mem)
        for idx in range(cap):
            if idx not in store:
                store[idx] = Stored(hexpdu, REC_UNREAD)
                if len(store) == cap and self.profile.full_line:
                    self._urc(self.profile.full_line)
                return idx
        return None

    # ------------------------------------------------------------- controls

    def inject_sms(
        self,
        sender: str,
        text: str,
        *,
        multipart_order: list[int] | None = None,
        store: bool = True,
        scts: datetime | None = None,
        concat_ref: int | None = None,
    ) -> list[int]:
        """An SMS arrives from the network. Returns the storage indexes used.

        `multipart_order` lists 1-based part numbers in arrival order. With
        store=False the message follows AT+CNMI (+CMT when mt is 2 or 3).
        """
        when = scts or datetime.now(timezone.utc).replace(microsecond=0)
        pdus = pducodec.encode_deliver(sender, text, scts=when, smsc=self.smsc, concat_ref=concat_ref)
        if multipart_order is not None:
            if sorted(multipart_order) != list(range(1, len(pdus) + 1)):
                raise ValueError(
                    f"multipart_order must be a permutation of 1..{len(pdus)}, got {multipart_order}"
                )
            pdus = [pdus[i - 1] for i in multipart_order]
        return self._inject(pdus, store)

    def inject_pdu(self, hexpdu: str, *, store: bool = True) -> list[int]:
        """A raw SMS-DELIVER PDU (with SMSC part) arrives; it is not validated."""
        return self._inject(["".join(hexpdu.split()).upper()], store)

    def _inject(self, pdus: list[str], store: bool) -> list[int]:
        with self._lock:
            ready = (
                self._master is not None and self._booted and self._sim_present and self._pin_ok
                and time.monotonic() >= max(self._sim_busy_until, self._sms_ready_at) and not self._network
            )
            indexes: list[int] = []
            for hexpdu in pdus:
                kind = "sms-store" if store else "sms"
                if not ready:
                    self._network.append((kind, hexpdu))
                    continue
                mem = self._st.mem[2]
                before = set(self._storage[mem])
                if not self._route(kind, hexpdu):
                    self._network.append((kind, hexpdu))
                    ready = False
                    continue
                indexes += sorted(set(self._storage[mem]) - before)
            return indexes

    def inject_status_report(self, mr: int, recipient: str, status: int = 0, *, store: bool = False,
                             submitted: datetime | None = None) -> int | None:
        """A status report for reference `mr` arrives from the network. It
        follows AT+CNMI (+CDS, +CDSI or dropped), or with store=True lands in
        the profile's report memory as with <ds>=2 (a report that came while
        no driver listened). Returns the storage index when stored at once."""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        hexpdu = pducodec.encode_status_report(mr % 256, recipient, status, submitted or now, now, smsc=self.smsc)
        with self._lock:
            self.reports.append({"mr": mr % 256, "number": recipient, "status": status, "pdu": hexpdu})
            if store:
                mem = self.profile.report_memory
                idx = self._store(mem, hexpdu)
                if idx is None:
                    self._network.append(("report-store", hexpdu))
                return idx
            self._network.append(("report", hexpdu))
            self._pump_network()
            return None

    def set_direct_delivery(self, on: bool = True) -> None:
        """What a TE's AT+CSMS=1 and AT+CNMI=2,2,0,1,0 do (or AT+CSMS=0 and
        AT+CNMI=2,1,0,1,0): new SMS as +CMT and reports as +CDS, each to be
        acknowledged with AT+CNMA."""
        with self._lock:
            self._st.csms = 1 if on else 0
            self._st.cnmi[1], self._st.cnmi[3] = (2, 1) if on else (1, 1)
            if not on:
                self._abandon_acks()

    def set_send_latency(self, seconds: float) -> None:
        with self._lock:
            self.send_latency = seconds

    def set_report_status(self, status: int) -> None:
        with self._lock:
            self.report_status = status

    def set_signal(self, rssi: int) -> None:
        with self._lock:
            self.rssi = rssi

    def set_registration(self, stat: int) -> None:
        """Change +CREG <stat>; announced when +CREG/+CEREG URCs are on."""
        with self._lock:
            self.registration = stat
            for name in ("creg", "cereg", "cgreg"):
                n = getattr(self._st, name)
                if n == 1:
                    self._urc(f"+{name.upper()}: {self._reg_stat()}")
                elif n == 2:
                    self._urc(f'+{name.upper()}: {self._reg_stat()},"00A1","0001B2C3",7')

    def set_next_mr(self, mr: int) -> None:
        with self._lock:
            self._next_mr = mr % 256

    def fail_next_sends(self, n: int, cms_code: int = 500, *, after: int = 0) -> None:
        """Refuse `n` sends with +CMS ERROR: cms_code, once `after` more went through."""
        with self._lock:
            self._fail_sends += [None] * after + [cms_code] * n

    def lose_next_references(self, n: int = 1, final: str = "OK") -> None:
        """The next `n` sends leave (recorded, reported) but are answered with
        `final` alone ("OK", "ERROR", ...) instead of `+CMGS: <mr>` and OK."""
        with self._lock:
            self._lose_refs += [final] * n

    def hang(self, on: bool = True) -> None:
        """Stop answering anything (and stop printing URCs) until hang(False)."""
        with self._lock:
            self._hung = on
            self._inbuf.clear()

    def emit_garbage(self, nbytes: int = 32) -> bytes:
        with self._lock:
            junk = bytes(random.getrandbits(8) for _ in range(nbytes))
            self._write(junk)
            return junk

    def fill_storage(self, mem: str | None = None) -> None:
        """Fill the receive memory with old read messages: new SMS wait at the network."""
        with self._lock:
            mem = mem or self._st.mem[2]
            filler = pducodec.encode_deliver(
                "+15559999999", "old message", scts=datetime(2020, 1, 1, tzinfo=timezone.utc)
            )[0]
            for idx in range(self._capacity(mem)):
                self._storage[mem].setdefault(idx, Stored(filler, REC_READ))
            if self.profile.full_line:
                self._urc(self.profile.full_line)

    def unplug(self) -> None:
        """The USB cable is pulled: the port and its link vanish."""
        with self._lock:
            self._close_pty()
            self._booted = False

    def replug(self) -> None:
        """The cable is back: a new pty, the link re-pointed, a fresh power-up."""
        with self._lock:
            if self._master is not None:
                self._close_pty()
            self._open_pty()
            self._power_up()

    def remove_sim(self) -> None:
        with self._lock:
            self._sim_present = False
            self._urc("+CPIN: NOT READY" if self.profile.name != "huawei" else "^SIMST:255")

    def insert_sim(self) -> None:
        with self._lock:
            self._sim_present = True
            self._schedule(0.05, self._pump_network)

    def stored_messages(self, mem: str | None = None) -> list[dict]:
        with self._lock:
            out = []
            for name in [mem] if mem else MEMORIES:
                for idx, m in sorted(self._storage[name].items()):
                    try:
                        decoded = pducodec.decode(m.pdu)
                    except pducodec.PduError:
                        decoded = None
                    out.append({"memory": name, "index": idx, "status": m.status, "pdu": m.pdu, "decoded": decoded})
            return out

    def wait_sent(self, n: int, timeout: float = 5.0) -> list[dict]:
        """Block until at least n PDUs have been sent; returns them all."""
        deadline = time.monotonic() + timeout
        with self._sent_cond:
            while len(self.sent) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.sent)} of {n} PDUs sent after {timeout} s")
                self._sent_cond.wait(left)
            return list(self.sent)


_DEFERRED = object()


def _reg_handler(name: str):
    """+CREG / +CEREG / +CGREG share one behaviour."""
    attr = name[1:].lower()

    def handler(self: Emulator, op: str, arg: str):
        if op == "?":
            n = getattr(self._st, attr)
            extra = ',"00A1","0001B2C3",7' if n >= 2 else ""
            return [f"{name}: {n},{self._reg_stat()}{extra}"]
        if op == "=?":
            return [f"{name}: (0-2)"]
        if op == "=" and arg.strip() in ("0", "1", "2"):
            setattr(self._st, attr, int(arg))
            return []
        raise CmeError(3)

    return handler


def _ints(arg: str) -> list[int]:
    out = []
    for v in arg.split(","):
        v = v.strip()
        if not v:
            continue
        if not v.isdigit():
            raise CmeError(3)
        out.append(int(v))
    return out


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def _tpdu_len(hexpdu: str) -> int:
    return len(hexpdu) // 2 - int(hexpdu[:2], 16) - 1


_COMMANDS: dict[str, Callable] = {
    "+CMEE": Emulator._cmd_cmee,
    "+CFUN": Emulator._cmd_cfun,
    "+CPIN": Emulator._cmd_cpin,
    "+CGMI": Emulator._cmd_cgmi,
    "+GMI": Emulator._cmd_cgmi,
    "+CGMM": Emulator._cmd_cgmm,
    "+GMM": Emulator._cmd_cgmm,
    "+CGMR": Emulator._cmd_cgmr,
    "+GMR": Emulator._cmd_cgmr,
    "+CGSN": Emulator._cmd_cgsn,
    "+GSN": Emulator._cmd_cgsn,
    "+CIMI": Emulator._cmd_cimi,
    "+CNUM": Emulator._cmd_cnum,
    "+CSQ": Emulator._cmd_csq,
    "+CREG": _reg_handler("+CREG"),
    "+CEREG": _reg_handler("+CEREG"),
    "+CGREG": _reg_handler("+CGREG"),
    "+COPS": Emulator._cmd_cops,
    "+CSCS": Emulator._cmd_cscs,
    "+CMGF": Emulator._cmd_cmgf,
    "+CSMS": Emulator._cmd_csms,
    "+CNMI": Emulator._cmd_cnmi,
    "+CPMS": Emulator._cmd_cpms,
    "+CSCA": Emulator._cmd_csca,
    "+CMGS": Emulator._cmd_cmgs,
    "+CMGW": Emulator._cmd_cmgw,
    "+CMGL": Emulator._cmd_cmgl,
    "+CMGR": Emulator._cmd_cmgr,
    "+CMGD": Emulator._cmd_cmgd,
    "+CNMA": Emulator._cmd_cnma,
    "+CUSD": Emulator._cmd_cusd,
    "+CBC": Emulator._cmd_cbc,
    "+CLAC": Emulator._cmd_clac,
}
