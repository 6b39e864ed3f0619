"""`Emulator`: the emulated modem plus what a test, benchmark or the control
server does to it: inject SMS and reports, change the radio, and cause
faults (failed sends, lost references, hangs, garbage, unplugging, SIM
removal)."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from typing import Any

from smsgw_worker import pdu as pducodec

from . import network
from .core import EmulatedModem
from .profiles import QUIRKS
from .state import MEMORIES, REC_READ, HeldPdu, Stored


class Emulator(EmulatedModem):
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
        when = scts or datetime.now(UTC).replace(microsecond=0)
        pdus = pducodec.encode_deliver(sender, text, scts=when, smsc=self.smsc, concat_ref=concat_ref)
        if multipart_order is not None:
            if sorted(multipart_order) != list(range(1, len(pdus) + 1)):
                raise ValueError(f"multipart_order must be a permutation of 1..{len(pdus)}, got {multipart_order}")
            pdus = [pdus[i - 1] for i in multipart_order]
        return self._inject(pdus, store)

    def inject_pdu(self, hexpdu: str, *, store: bool = True) -> list[int]:
        """A raw SMS-DELIVER PDU (with SMSC part) arrives; it is not validated."""
        return self._inject(["".join(hexpdu.split()).upper()], store)

    def _inject(self, pdus: list[str], store: bool) -> list[int]:
        with self._lock:
            ready = (
                self._master is not None
                and self._booted
                and self._sim_present
                and self._pin_ok
                and time.monotonic() >= max(self._sim_busy_until, self._sms_ready_at)
                and not self._network
            )
            indexes: list[int] = []
            for hexpdu in pdus:
                kind = "sms-store" if store else "sms"
                if not ready:
                    self._network.append(HeldPdu(kind, hexpdu))
                    continue
                mem = self._st.mem[2]
                before = set(self._storage[mem])
                if not network.route(self, kind, hexpdu):
                    self._network.append(HeldPdu(kind, hexpdu))
                    ready = False
                    continue
                indexes += sorted(set(self._storage[mem]) - before)
            return indexes

    def inject_status_report(
        self, mr: int, recipient: str, status: int = 0, *, store: bool = False, submitted: datetime | None = None
    ) -> int | None:
        """A status report for reference `mr` arrives from the network. It
        follows AT+CNMI (+CDS, +CDSI or dropped), or with store=True lands in
        the profile's report memory as with <ds>=2 (a report that came while
        no driver listened). Returns the storage index when stored at once."""
        now = datetime.now(UTC).replace(microsecond=0)
        hexpdu = pducodec.encode_status_report(mr % 256, recipient, status, submitted or now, now, smsc=self.smsc)
        with self._lock:
            self.reports.append({"mr": mr % 256, "number": recipient, "status": status, "pdu": hexpdu})
            if store:
                mem = self.profile.report_memory
                idx = network.store(self, mem, hexpdu)
                if idx is None:
                    self._network.append(HeldPdu("report-store", hexpdu))
                return idx
            self._network.append(HeldPdu("report", hexpdu))
            network.pump(self)
            return None

    def set_direct_delivery(self, on: bool = True) -> None:
        """What a TE's AT+CSMS=1 and AT+CNMI=2,2,0,1,0 do (or AT+CSMS=0 and
        AT+CNMI=2,1,0,1,0): new SMS as +CMT and reports as +CDS, each to be
        acknowledged with AT+CNMA."""
        with self._lock:
            self._st.csms = 1 if on else 0
            self._st.cnmi[1], self._st.cnmi[3] = (2, 1) if on else (1, 1)
            if not on:
                network.abandon_acks(self)

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

    def set_smsc(self, number: str) -> None:
        """The SIM's SMSC address (AT+CSCA); "" = none, so sends get +CMS ERROR: 330."""
        with self._lock:
            self.smsc = number

    def incoming_call(self, number: str | None, rings: int = 5, interval: float = 1.0) -> None:
        """A call rings `rings` times (RING, then +CLIP when AT+CLIP=1 and the
        number is known) unless ATH rejects it; `calls` records the outcome."""
        with self._lock:
            call: dict[str, Any] = {"number": number, "rings": 0, "outcome": None}
            self.calls.append(call)
            self._call = call

            def ring() -> None:
                if self._call is not call:
                    return
                if call["rings"] >= rings:
                    call["outcome"], self._call = "missed", None
                    self._urc("NO CARRIER")
                    return
                call["rings"] += 1
                self._urc("RING")
                if self._clip and number:
                    self._urc(f'+CLIP: "{number}",{145 if number.startswith("+") else 129},,,,0')
                self._schedule(interval, ring)

            ring()

    def reboot(self) -> None:
        """The module restarts on its own (brown-out, watchdog): settings
        reset, boot and ready lines printed, the SIM locked again if it has a PIN."""
        with self._lock:
            self._power_up()

    def reboot_on_next_send(self) -> None:
        """The next AT+CMGS meets a module restarting (on its own, or the
        brown-out a weak USB supply gives at the transmit burst: a Pi's ports
        are the classic case): boot lines instead of the prompt, then the
        booting module's bare ERROR. Nothing was sent."""
        with self._lock:
            self._reboot_on_send = True

    def set_quirk(self, name: str, on: bool = True) -> None:
        """Switch a behaviour recorded from a real device (profiles.QUIRKS) on or off."""
        if name not in QUIRKS:
            raise ValueError(f"unknown quirk {name!r}; choose one of {sorted(QUIRKS)}")
        with self._lock:
            if on:
                self.quirks.add(name)
            else:
                self.quirks.discard(name)

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

    def hang(self, on: bool = True, mode: str = "swallow") -> None:
        """Stop answering until hang(False). What real modems do while their
        firmware stalls, as two modes (docs/modems.md, "Modem faults"):

        - "swallow": input and output are lost (a USB stall, a firmware
          watchdog that drops its buffers); nothing of the hang survives it.
        - "late": the modem holds both, then prints what it held back and
          runs the commands that queued up, in order (a firmware busy with
          the radio); a send in flight is answered after the hang.

        The network side runs on in both: a PDU already taken leaves."""
        with self._lock:
            self._set_hung(on, mode)

    def hang_for(self, seconds: float, mode: str = "swallow") -> None:
        """A hang that ends by itself after `seconds`."""
        with self._lock:
            self._hang_for(seconds, mode)

    def hang_on_next_send(self, seconds: float, mode: str = "late") -> None:
        """The next PDU taken by AT+CMGS starts a hang of `seconds` before
        the modem answers it: the fault of a send in flight."""
        if seconds <= 0:
            raise ValueError("'seconds' must be greater than 0")
        if mode not in ("late", "swallow"):
            raise ValueError(f"unknown hang mode {mode!r}; choose 'late' or 'swallow'")
        with self._lock:
            self._hang_on_submit = (seconds, mode)

    def emit_garbage(self, nbytes: int = 32) -> bytes:
        """Random bytes from the modem (line noise, a glitch on the USB
        serial bridge, a boot banner at another baud rate)."""
        with self._lock:
            junk = bytes(random.getrandbits(8) for _ in range(nbytes))
            self._write(junk)
            self.fault_log.append({"fault": "garbage", "event": "end", "mode": None, "at": time.time()})
            return junk

    def fill_storage(self, mem: str | None = None) -> None:
        """Fill the receive memory with old read messages: new SMS wait at the network."""
        with self._lock:
            mem = mem or self._st.mem[2]
            filler = pducodec.encode_deliver("+15559999999", "old message", scts=datetime(2020, 1, 1, tzinfo=UTC))[0]
            for idx in range(self._capacity(mem)):
                self._storage[mem].setdefault(idx, Stored(filler, REC_READ))
            if self.profile.full_line:
                self._urc(self.profile.full_line)

    def unplug(self) -> None:
        """The USB cable is pulled: the port and its link vanish."""
        with self._lock:
            self._close_pty()
            self._booted = False
            self.fault_log.append({"fault": "unplug", "event": "start", "mode": None, "at": time.time()})

    def replug(self, link: str | None = None, *, new_node: bool = False) -> None:
        """The cable is back: a new pty, a fresh power-up, and the link
        re-pointed; with `link`, under that new name, as a modem that comes
        back as /dev/ttyUSB1 after being /dev/ttyUSB0.

        With new_node the port surely comes back under another device node
        (as when the kernel still held the old one); the link, like a
        /dev/serial/by-id path, follows it."""
        with self._lock:
            before = self._device
            if self._master is not None:
                self._close_pty()
            if link is not None:
                self.link = link
            self._open_pty()
            if new_node and self._device == before:
                held = (self._master, self._slave)
                self._open_pty()  # taken while the first is open: another number
                for fd in held:
                    if fd is not None:
                        os.close(fd)
            self._power_up()
            self.fault_log.append({"fault": "unplug", "event": "end", "mode": None, "at": time.time()})

    def remove_sim(self) -> None:
        with self._lock:
            self._sim_present = False
            self._urc("+CPIN: NOT READY" if self.profile.name != "huawei" else "^SIMST:255")

    def insert_sim(self) -> None:
        with self._lock:
            self._sim_present = True
            self._schedule(0.05, lambda: network.pump(self))

    def stored_messages(self, mem: str | None = None) -> list[dict[str, Any]]:
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

    def wait_sent(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least n PDUs have been sent in all; returns the ones
        kept (the last `keep`)."""
        deadline = time.monotonic() + timeout
        with self._sent_cond:
            while self.sent.total < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.sent.total} of {n} PDUs sent after {timeout} s")
                self._sent_cond.wait(left)
            return list(self.sent)
