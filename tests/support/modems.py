"""The modem side for worker tests: a bare AT client on an emulator's
pseudo-terminal."""

from __future__ import annotations

import re
import time

import serial

from .waits import wait_until

FINALS = ("OK", "ERROR", "COMMAND NOT SUPPORT")
FINAL_PREFIXES = ("+CME ERROR:", "+CMS ERROR:")


class AtPort:
    """Writes a line, reads until a final result."""

    FINALS = (*FINALS, *FINAL_PREFIXES)

    def __init__(self, device: str):
        self.port = serial.Serial(device, 115200, timeout=0.02)

    def close(self) -> None:
        self.port.close()

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read_until(self, predicate, timeout: float = 2.0) -> str:
        buf = bytearray()

        def matched():
            # Each read blocks for up to the port's timeout: no extra pause needed.
            buf.extend(self.port.read(4096))
            text = buf.decode("latin-1")
            return text if predicate(text) else None

        try:
            return wait_until(matched, timeout, 0, lambda: f"a match on the port; got {bytes(buf)!r}")
        except AssertionError as exc:
            # Silence is what some tests expect (pytest.raises(TimeoutError)).
            raise TimeoutError(str(exc)) from None

    def lines(self, text: str) -> list[str]:
        return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]

    def cmd(self, command: str, timeout: float = 2.0) -> list[str]:
        """Send one command; return the response lines, final result last."""
        self.port.write(command.encode() + b"\r")
        text = self.read_until(lambda t: self._final(t) is not None, timeout)
        return self.lines(text)

    def _final(self, text: str):
        for line in self.lines(text):
            if line in FINALS or line.startswith(FINAL_PREFIXES):
                return line
        return None

    def expect(self, needle: str, timeout: float = 2.0) -> str:
        return self.read_until(lambda t: needle in t, timeout)

    def drain(self, seconds: float = 0.1) -> str:
        """Whatever arrives within `seconds` (the span is the point: discard stray output)."""
        end = time.monotonic() + seconds
        buf = b""
        while time.monotonic() < end:
            buf += self.port.read(4096)
        return buf.decode("latin-1")
