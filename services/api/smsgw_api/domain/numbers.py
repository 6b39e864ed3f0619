"""Phone numbers as the gateway stores and compares them (E.164), and the
priority names clients use."""

from __future__ import annotations

import re

from smsgw_api.core.errors import ValidationError
from smsgw_common.models import PRIORITIES

PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
# ASCII only: `\d` and `\s` would also take Arabic-Indic or full-width
# digits and odd spaces, which the modem's PDU encoder cannot write.
_SEPARATORS = re.compile(r"[ \t\-().]")
E164 = re.compile(r"^\+[1-9][0-9]{2,14}$")
# A number as typed, separators included; anything longer is not a phone number.
MAX_NUMBER_LENGTH = 32


def e164(value: str, international: bool = False) -> str:
    """`value` in E.164, or ValueError saying what is wrong with it (see normalize_number)."""
    if len(value) > MAX_NUMBER_LENGTH:
        raise ValueError(f"must be at most {MAX_NUMBER_LENGTH} characters")
    number = _SEPARATORS.sub("", value.strip())
    if number.startswith("00"):
        number = "+" + number[2:]
    if not number.startswith("+"):
        if international:
            raise ValueError(f"{value!r} must start with + (or 00) and the country code")
        number = "+" + number
    if not E164.match(number):
        raise ValueError(f"{value!r} is not an E.164 number (+ country code and up to 15 digits)")
    return number


def normalize_number(value, field: str, international: bool = False) -> str:
    """Spaces, dashes and dots dropped, `00` read as `+`, then E.164.

    With `international` (recipients) the number must carry its country code
    (`+` or `00`), as the seed demanded: guessing a `+` in front of a national
    number like 7911123456 would text another country. Otherwise (a SIM's own
    number, typed by an admin) a missing `+` is added."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(
            {field: "is required"},
            message="Recipient number is required and cannot be empty!" if field.endswith("recipient") else None,
        )
    try:
        return e164(value, international)
    except ValueError as exc:
        raise ValidationError({field: str(exc)}) from None


def normalize_sender(number: str | None) -> str:
    """The form POST /api/sms compares recipients in (E.164); a sender that is
    not a phone number (an alphanumeric name) is kept as written."""
    try:
        return normalize_number(number, "number")
    except ValidationError:
        return _SEPARATORS.sub("", number or "")
