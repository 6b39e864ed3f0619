"""A scripted modem on a real pseudo-terminal: a table of command -> reply
bytes, and a record of every byte the driver wrote (python-gsmmodem style).

The full emulator (smsgw_worker.emulator) answers like a whole modem; this
one lets a link/AT test pin down exact bytes and odd timings.
"""

from __future__ import annotations

import os
import select
import threading
import tty
from collections.abc import Callable

from support.waits import wait_until

Reply = bytes | Callable[[str], bytes]


class ScriptedModem:
    def __init__(self, table: dict[str, Reply] | None = None, default: bytes = b"\r\nERROR\r\n"):
        self.table: dict[str, Reply] = dict(table or {})
        self.default = default
        self.written = bytearray()
        self.commands: list[str] = []
        self.pdus: list[str] = []
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.device = os.ttyname(slave)
        self._slave = slave  # kept open so that the pty survives the driver reopening it
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def push(self, data: bytes) -> None:
        """Write unsolicited bytes to the driver."""
        os.write(self.master, data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def wait_command(self, command: str, timeout: float = 3.0) -> None:
        wait_until(lambda: command in self.commands, timeout, 0.01, lambda: f"{command!r}; got {self.commands}")

    def _run(self) -> None:
        buf = bytearray()
        pdu_mode = False
        while not self._stop:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.written += data
            buf += data
            while True:
                if pdu_mode:
                    end = max(buf.find(b"\x1a"), buf.find(b"\x1b"))
                    if end < 0:
                        break
                    pdu = buf[:end].decode("ascii", "replace")
                    del buf[: end + 1]
                    pdu_mode = False
                    self.pdus.append(pdu)
                    self._answer("PDU:" + pdu)
                    continue
                cut = buf.find(b"\r")
                if cut < 0:
                    break
                command = buf[:cut].decode("ascii", "replace").strip()
                del buf[: cut + 1]
                if not command:
                    continue
                self.commands.append(command)
                if command.upper().startswith("AT+CMGS="):
                    reply = self._lookup(command)
                    os.write(self.master, reply)
                    pdu_mode = b"> " in reply
                else:
                    self._answer(command)

    def _lookup(self, command: str) -> bytes:
        reply = self.table.get(command)
        if reply is None:
            reply = next((v for k, v in self.table.items() if k.endswith("*") and command.startswith(k[:-1])), None)
        if reply is None:
            return self.default
        return reply(command) if callable(reply) else reply

    def _answer(self, command: str) -> None:
        reply = self._lookup(command)
        if reply:
            os.write(self.master, reply)
