"""Modem errors as a hierarchy; CMS/CME errors carry the modem's code.

The worker decides retry or give up from the class and the code
(`classify_send_error`), never by parsing text.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal, NamedTuple

# What a failed AT+CMGS means for the message (the worker's outbox acts on
# it): PERMANENT fails the message with the modem's code; SIM_PROBLEM requeues
# it without counting an attempt (the SIM, not the message, is at fault, and
# the router may move it); TRANSIENT retries it with backoff up to the attempt
# limit; UNCONFIRMED (the PDU was written, no reference came back) records it
# `unknown` and never resends it, since it may have left.
PERMANENT: Final = "permanent"
TRANSIENT: Final = "transient"
SIM_PROBLEM: Final = "sim"
UNCONFIRMED: Final = "unconfirmed"
SendOutcome = Literal["permanent", "transient", "sim", "unconfirmed"]


class Code(NamedTuple):
    """One row of the modem error tables below."""

    text: str
    on_send: SendOutcome  # when AT+CMGS fails with this code
    sim_reason: str | None = None  # the SimProblem reason, where AT+CPIN? answers with it


# The one table of +CMS codes: 3GPP TS 27.005 3.2.5 and TS 23.040 9.2.3.22
# (RP/TP causes below 256). Codes missing here: 128-255 are PERMANENT (see
# `cms_code`), any other TRANSIENT.
CMS_CODES: dict[int, Code] = {
    1: Code("unassigned (unallocated) number", PERMANENT),
    8: Code("operator determined barring", PERMANENT),
    10: Code("call barred", PERMANENT),
    17: Code("network failure", TRANSIENT),
    21: Code("short message transfer rejected", PERMANENT),
    22: Code("memory capacity exceeded", TRANSIENT),
    27: Code("destination out of service", TRANSIENT),
    28: Code("unidentified subscriber", PERMANENT),
    29: Code("facility rejected", PERMANENT),
    30: Code("unknown subscriber", PERMANENT),
    38: Code("network out of order", TRANSIENT),
    41: Code("temporary failure", TRANSIENT),
    42: Code("congestion", TRANSIENT),
    47: Code("resources unavailable, unspecified", TRANSIENT),
    50: Code("requested facility not subscribed", PERMANENT),
    69: Code("requested facility not implemented", PERMANENT),
    81: Code("invalid short message transfer reference value", PERMANENT),
    95: Code("invalid message, unspecified", PERMANENT),
    96: Code("invalid mandatory information", PERMANENT),
    97: Code("message type non-existent or not implemented", PERMANENT),
    98: Code("message not compatible with short message protocol state", TRANSIENT),
    99: Code("information element non-existent or not implemented", PERMANENT),
    111: Code("protocol error, unspecified", PERMANENT),
    127: Code("interworking, unspecified", PERMANENT),
    300: Code("ME failure", TRANSIENT),
    301: Code("SMS service of ME reserved", TRANSIENT),
    302: Code("operation not allowed", TRANSIENT),
    303: Code("operation not supported", PERMANENT),
    304: Code("invalid PDU mode parameter", PERMANENT),
    305: Code("invalid text mode parameter", PERMANENT),
    310: Code("SIM not inserted", SIM_PROBLEM),
    311: Code("SIM PIN required", SIM_PROBLEM),
    312: Code("PH-SIM PIN required", SIM_PROBLEM),
    313: Code("SIM failure", SIM_PROBLEM),
    314: Code("SIM busy", TRANSIENT),
    315: Code("SIM wrong", SIM_PROBLEM),
    316: Code("SIM PUK required", SIM_PROBLEM),
    317: Code("SIM PIN2 required", SIM_PROBLEM),
    318: Code("SIM PUK2 required", SIM_PROBLEM),
    320: Code("memory failure", TRANSIENT),
    321: Code("invalid memory index", TRANSIENT),
    322: Code("memory full", TRANSIENT),
    # Not the message's fault: the worker stops sending until AT+CSCA holds a
    # number (worker/lifecycle.py), so the retry costs no attempt in practice.
    330: Code("SMSC address unknown", TRANSIENT),
    331: Code("no network service", TRANSIENT),
    332: Code("network timeout", TRANSIENT),
    340: Code("no +CNMA acknowledgement expected", TRANSIENT),
    500: Code("unknown error", TRANSIENT),
}

# The one table of +CME codes: 3GPP TS 27.007 9.2. Codes missing here are
# TRANSIENT.
CME_CODES: dict[int, Code] = {
    0: Code("phone failure", TRANSIENT),
    3: Code("operation not allowed", TRANSIENT),
    4: Code("operation not supported", TRANSIENT),
    10: Code("SIM not inserted", SIM_PROBLEM, "sim_missing"),
    11: Code("SIM PIN required", SIM_PROBLEM),
    12: Code("SIM PUK required", SIM_PROBLEM),
    13: Code("SIM failure", SIM_PROBLEM, "sim_failure"),
    14: Code("SIM busy", TRANSIENT, "sim_busy"),
    15: Code("SIM wrong", SIM_PROBLEM),
    16: Code("incorrect password", SIM_PROBLEM),
    17: Code("SIM PIN2 required", SIM_PROBLEM),
    18: Code("SIM PUK2 required", SIM_PROBLEM),
    20: Code("memory full", TRANSIENT),
    21: Code("invalid index", TRANSIENT),
    22: Code("not found", TRANSIENT),
    30: Code("no network service", TRANSIENT),
    31: Code("network timeout", TRANSIENT),
    100: Code("unknown", TRANSIENT),
}

CMS_TEXT = {code: row.text for code, row in CMS_CODES.items()}
CME_TEXT = {code: row.text for code, row in CME_CODES.items()}


def cms_code(code: int) -> Code:
    row = CMS_CODES.get(code)
    if row is not None:
        return row
    # 128-255 are TP-FCS causes about the PDU itself (TS 23.040 9.2.3.22):
    # resending the same PDU gets the same answer.
    return Code("unknown error", PERMANENT if 128 <= code <= 255 else TRANSIENT)


def cme_code(code: int) -> Code:
    return CME_CODES.get(code) or Code("unknown error", TRANSIENT)


class ModemError(Exception):
    """Anything that went wrong talking to the modem."""


class PortGone(ModemError):
    """The serial port is closed or vanished (EOF, EIO, USB unplug)."""


class ModemTimeout(ModemError):
    """No final result code in time.

    `submitted` is True when a PDU and Ctrl-Z had already been written: the
    SMS may have left, so the caller must not resend it blindly.
    """

    def __init__(self, command: str, timeout: float, submitted: bool = False, why: str | None = None):
        self.command, self.timeout, self.submitted, self.why = command, timeout, submitted, why
        text = f"no answer to {command!r} within {timeout:g}s"
        if why:
            text = f"no answer to {command!r} after {timeout:.1f}s: {why}"
        super().__init__(text + (" (after the PDU was written)" if submitted else ""))


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
    table: ClassVar[dict[int, str]] = {}

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
            value = line[len(prefix) :].strip()
            try:
                return cls(int(value), command=command)
            except ValueError:
                # Verbose mode (+CMEE=2) gives text instead of a number.
                return cls(-1, value, command=command)
    if "NOT SUPPORT" in line.upper():
        return NotSupported(command, line)
    return CommandError(command, line)


def classify_send_error(exc: BaseException) -> SendOutcome:
    """What a failed AT+CMGS means for its message (the tables above)."""
    if isinstance(exc, CmsError):
        return cms_code(exc.code).on_send
    if isinstance(exc, CmeError):
        return cme_code(exc.code).on_send
    if isinstance(exc, (ModemTimeout, SubmitUnconfirmed)) and exc.submitted:
        return UNCONFIRMED
    return TRANSIENT


class SimProblem(ModemError):
    """The SIM is missing, locked or failing; `reason` is short and stable
    (`sim_missing`, `pin_required`, `pin_rejected`, `puk_required`, `sim_failure`, `sim_busy`)."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


# What the worker says about a SimProblem reason in the modem's health.
SIM_STATE_TEXT = {
    "sim_missing": "SIM not inserted",
    "pin_required": "SIM PIN required",
    "pin_rejected": "MODEM_PIN rejected by the SIM",
    "puk_required": "SIM PUK required",
    "sim_failure": "SIM failure",
    "sim_busy": "SIM busy",
}
