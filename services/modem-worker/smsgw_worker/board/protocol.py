"""The seed's board protocol (docs/boards.md): its topics, its payloads and
what its status words mean here. Pure: no I/O.

The seed's topics carry no prefix; `root` is prepended to each of them as
it stands (so root "" gives exactly `sms/send/<n>`, `/sms/status`,
`/sms/receive`), which lets tests and shared brokers keep boards apart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from smsgw_common.models import DELIVERED, FAILED, SENT

log = logging.getLogger(__name__)

# The words the seed's boards are known to send; compared case-insensitively.
STATUS_WORDS = {"sent": SENT, "delivered": DELIVERED, "failed": FAILED}

# Bounds on what a board may hand us: generous for one SMS, small enough that
# a misbehaving board cannot fill the database with one payload.
MAX_NUMBER = 64
MAX_TEXT = 4096
MAX_WORD = 64


def digits(number: str) -> str:
    """A phone number as the seed's send topic spells it: no '+', no '00', no blanks."""
    out = "".join(ch for ch in number if ch.isdigit())
    if number.strip().startswith("00"):
        out = out[2:]
    return out


def same_number(a: str | None, b: str | None) -> bool:
    """Whether two spellings name the same number (+49.., 0049.., 49..)."""
    if not a or not b:
        return False
    da, db = digits(a), digits(b)
    return bool(da) and da == db


def status_state(word: str) -> str | None:
    """The message state a status word means, or None for a word we do not know."""
    return STATUS_WORDS.get(word.strip().lower())


@dataclass(frozen=True)
class SeedTopics:
    root: str = ""

    def send(self, number: str) -> str:
        return f"{self.root}sms/send/{digits(number)}"

    def status(self) -> str:
        return f"{self.root}/sms/status"

    def receive(self) -> str:
        return f"{self.root}/sms/receive"


class _SeedPayload(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # Postgres text cannot hold NUL; a payload with one is refused whole.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("NUL character")
        return value


class SendPayload(_SeedPayload):
    """Gateway -> board, on `sms/send/<sim number without +>`."""

    number: str
    message: str
    message_id: str

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class StatusPayload(_SeedPayload):
    """Board -> gateway, on `/sms/status`."""

    message_id: str = Field(min_length=1, max_length=64)
    sender_number: str = Field(min_length=1, max_length=MAX_NUMBER)
    receiver_number: str | None = Field(default=None, max_length=MAX_NUMBER)
    message: str | None = Field(default=None, max_length=MAX_TEXT)
    status: str = Field(min_length=1, max_length=MAX_WORD)

    @field_validator("message_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # The seed's ids were UUID strings; ours are integers, and a board may
        # echo either form back.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ReceivePayload(_SeedPayload):
    """Board -> gateway, on `/sms/receive`; receiver_number is the board's SIM."""

    sender_number: str = Field(min_length=1, max_length=MAX_NUMBER)
    receiver_number: str = Field(min_length=1, max_length=MAX_NUMBER)
    message: str = Field(max_length=MAX_TEXT)


P = TypeVar("P", bound=_SeedPayload)


def parse_board(model: type[P], raw: bytes) -> P | None:
    """A board's payload, or None (logged) when it is not one."""
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        log.warning("dropping invalid board %s: %s", model.__name__, str(exc)[:300])
        return None


def message_id_of(payload: StatusPayload) -> int | None:
    """Our message id in a status, or None when it cannot be one of ours."""
    text = payload.message_id
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)
