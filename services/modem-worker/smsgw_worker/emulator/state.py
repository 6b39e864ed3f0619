"""The emulated modem's data: error texts, storage, the settings a power
cycle resets, and the +CMT/+CDS that wait for AT+CNMA."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .core import EmulatedModem

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


class UnknownCommand(Exception):
    """Answered with the profile's reply to an unknown command (ERROR, or COMMAND NOT SUPPORT)."""


@dataclass
class Stored:
    pdu: str  # with SMSC part
    status: int


@dataclass
class Pending:
    """An unsolicited +CMT/+CDS that waits for AT+CNMA."""

    lines: list[str]
    fallback: Callable[[], None]
    attempts: int = 0
    event: Timer | None = None
    record: dict[str, Any] = field(default_factory=dict)  # its entry in EmulatedModem.direct_deliveries


@dataclass
class State:
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


class Timer:
    """A timed event on the emulator's loop; cancelled ones stay queued but do nothing."""

    __slots__ = ("action", "due", "kind", "live", "seq")

    def __init__(self, due: float, seq: int, action: Callable[[], None], kind: str) -> None:
        self.due, self.seq, self.action, self.kind, self.live = due, seq, action, kind, True

    def __lt__(self, other: Timer) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


class Recent(list[Any]):
    """The last `keep` entries of a record that only grows (PDUs sent,
    commands seen, reports made), and in `total` how many there were in all.

    A demo or soak modem runs for months: keeping every entry would grow
    without bound. Tests look at the few they caused, as a plain list."""

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        super().__init__()
        self.keep = keep
        self.total = 0

    def append(self, entry: Any) -> None:
        super().append(entry)
        self.total += 1
        if len(self) > self.keep:
            del self[0]

    def clear(self) -> None:
        super().clear()
        self.total = 0


class HeldPdu(NamedTuple):
    """A PDU the network holds until the modem can take it."""

    kind: str  # "sms", "report" (follow AT+CNMI), "sms-store", "report-store" (stored whatever it says)
    pdu: str


class Deferred:
    """A command that answers later (after the `> ` prompt, or after a reboot)."""


DEFERRED = Deferred()
Answer = list[str] | Deferred  # a command's information lines, or DEFERRED
Handler = Callable[["EmulatedModem", str, str], Answer]  # (emulator, op, arg); op is "", "?", "=?" or "="


def tpdu_len(hexpdu: str) -> int:
    return len(hexpdu) // 2 - int(hexpdu[:2], 16) - 1
