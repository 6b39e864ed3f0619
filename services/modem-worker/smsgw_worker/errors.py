"""Modem errors as a hierarchy; CMS/CME errors carry the modem's code.

The worker decides retry or give up from the class and the code
(`classify_send_error`), never by parsing text.
"""
from __future__ import annotations

# 3GPP TS 27.005 3.2.5 (+CMS) and TS 23.040 9.2.3.22 (RP/TP causes below 256).
CMS_TEXT = {
    1: "unassigned (unallocated) number",
    8: "operator determined barring",
    10: "call barred",
    17: "network failure",
    21: "short message transfer rejected",
    22: "memory capacity exceeded",
    27: "destination out of service",
    28: "unidentified subscriber",
    29: "facility rejected",
    30: "unknown subscriber",
    38: "network out of order",
    41: "temporary failure",
    42: "congestion",
    47: "resources unavailable, unspecified",
    50: "requested facility not subscribed",
    69: "requested facility not implemented",
    81: "invalid short message transfer reference value",
    95: "invalid message, unspecified",
    96: "invalid mandatory information",
    97: "message type non-existent or not implemented",
    98: "message not compatible with short message protocol state",
    99: "information element non-existent or not implemented",
    111: "protocol error, unspecified",
    127: "interworking, unspecified",
    300: "ME failure",
    301: "SMS service of ME reserved",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    312: "PH-SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    315: "SIM wrong",
    316: "SIM PUK required",
    317: "SIM PIN2 required",
    318: "SIM PUK2 required",
    320: "memory failure",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}

# 3GPP TS 27.007 9.2 (+CME).
CME_TEXT = {
    0: "phone failure",
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    17: "SIM PIN2 required",
    18: "SIM PUK2 required",
    20: "memory full",
    21: "invalid index",
    22: "not found",
    30: "no network service",
    31: "network timeout",
    100: "unknown",
}


class ModemError(Exception):
    """Anything that went wrong talking to the modem."""


class PortGone(ModemError):
    """The serial port is closed or vanished (EOF, EIO, USB unplug)."""


class ModemTimeout(ModemError):
    """No final result code in time.

    `submitted` is True when a PDU and Ctrl-Z had already been written: the
    SMS may have left, so the caller must not resend it blindly.
    """

    def __init__(self, command: str, timeout: float, submitted: bool = False):
        self.command, self.timeout, self.submitted = command, timeout, submitted
        super().__init__(f"no answer to {command!r} within {timeout:g}s")


class SubmitUnconfirmed(ModemError):
    """The PDU and Ctrl-Z were written and the modem answered without a
    `+CMGS: <mr>` and without a +CMS/+CME error (a bare OK or ERROR, an
    unparsable reference): the SMS may have left, so, as after a timeout,
    the caller records it `unknown` and never resends it."""

    submitted = True

    def __init__(self, command: str, line: str):
        self.command, self.line = command, line
        super().__init__(f"{command!r} answered {line!r} after the PDU, without a message reference")


class CommandError(ModemError):
    """A plain ERROR (or a vendor's refusal) to one command."""

    def __init__(self, command: str, line: str = "ERROR"):
        self.command, self.line = command, line
        super().__init__(f"{command!r} failed: {line}")


class NotSupported(CommandError):
    """`COMMAND NOT SUPPORT` (Huawei) and friends: try another variant."""


class _CodedError(CommandError):
    kind = ""
    table: dict[int, str] = {}

    def __init__(self, code: int, text: str | None = None, command: str = ""):
        self.code = code
        self.text = text or self.table.get(code, "unknown error")
        CommandError.__init__(self, command, f"+{self.kind} ERROR: {code}")
        self.args = (f"+{self.kind} ERROR {code} ({self.text}) on {command!r}",)


class CmsError(_CodedError):
    kind = "CMS"
    table = CMS_TEXT


class CmeError(_CodedError):
    kind = "CME"
    table = CME_TEXT


def parse_error_line(line: str, command: str) -> CommandError:
    """Turn a final error line into its exception (unknown codes keep the text)."""
    for prefix, cls in (("+CMS ERROR:", CmsError), ("+CME ERROR:", CmeError)):
        if line.startswith(prefix):
            value = line[len(prefix):].strip()
            try:
                return cls(int(value), command=command)
            except ValueError:
                # Verbose mode (+CMEE=2) gives text instead of a number.
                return cls(-1, value, command=command)
    if "NOT SUPPORT" in line.upper():
        return NotSupported(command, line)
    return CommandError(command, line)


# What a failed AT+CMGS means for the message (documented in the worker README
# part of worker.py): PERMANENT fails the message with the modem's code;
# SIM_PROBLEM requeues it without counting an attempt (the SIM, not the
# message, is at fault, and the router may move it); everything else is
# TRANSIENT and retried with backoff up to the attempt limit.
PERMANENT, TRANSIENT, SIM_PROBLEM = "permanent", "transient", "sim"

_PERMANENT_CMS = {1, 8, 10, 21, 28, 29, 30, 50, 69, 81, 95, 96, 97, 99, 111, 127, 303, 304, 305, 330}
_SIM_CMS = {310, 311, 312, 313, 315, 316, 317, 318}
_SIM_CME = {10, 11, 12, 13, 15, 16, 17, 18}


def classify_send_error(exc: BaseException) -> str:
    if isinstance(exc, CmsError):
        if exc.code in _SIM_CMS:
            return SIM_PROBLEM
        # 128-255 are TP-FCS causes about the PDU itself (TS 23.040 9.2.3.22):
        # resending the same PDU gets the same answer.
        if exc.code in _PERMANENT_CMS or 128 <= exc.code <= 255:
            return PERMANENT
        return TRANSIENT
    if isinstance(exc, CmeError):
        return SIM_PROBLEM if exc.code in _SIM_CME else TRANSIENT
    return TRANSIENT


class SimProblem(ModemError):
    """The SIM is missing, locked or failing; `reason` is short and stable
    (`sim_missing`, `pin_required`, `puk_required`, `sim_failure`, `sim_busy`)."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")
