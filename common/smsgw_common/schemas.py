"""Payload schemas for MQTT messages, validated on both ends.

A payload that fails validation is logged and dropped by the consumer
(`parse` returns None); it never crashes it. Building one in code checks it
the same way (ValueError).

Plain dataclasses, not pydantic: every service imports this module, and
pydantic with these models costs a modem worker 8 MB of its 40 MB budget
(bench/README.md, "Modem worker"). A field's type is read from its
annotation (`int`, `str`, `bool`, `float`, `datetime`, `dict`, each maybe
`| None`); `bounds()`, as the field's metadata, adds limits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from datetime import datetime
from typing import Any, Self, TypeVar

from smsgw_common.topics import NAME_PATTERN

log = logging.getLogger(__name__)


def bounds(
    *,
    pattern: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    ge: int | None = None,
    choices: tuple[str, ...] | None = None,
    aware: bool = False,
) -> dict[str, Any]:
    """What a field's value must meet beyond its type: its `metadata`."""
    return {
        "pattern": re.compile(pattern) if pattern else None,
        "min_length": min_length,
        "max_length": max_length,
        "ge": ge,
        "choices": choices,
        "aware": aware,
    }


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer is expected")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("an integer is expected")


def _as_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError("a number is expected")


def _as_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("a string is expected")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("true or false is expected")


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("an ISO 8601 time is expected") from None
    raise ValueError("an ISO 8601 time is expected")


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ValueError("an object is expected")


_CONVERT = {
    "int": _as_int,
    "float": _as_float,
    "str": _as_str,
    "bool": _as_bool,
    "datetime": _as_datetime,
    "dict[str, Any]": _as_dict,
}


def _check(field: dataclasses.Field[Any], value: Any) -> Any:
    kind = str(field.type)
    optional = kind.endswith(" | None")
    if value is None:
        if optional:
            return None
        raise ValueError("a value is required")
    value = _CONVERT[kind.removesuffix(" | None")](value)
    rules = field.metadata
    if not rules:
        return value
    if rules["choices"] is not None and value not in rules["choices"]:
        raise ValueError(f"one of {', '.join(rules['choices'])} is expected")
    if rules["min_length"] is not None and len(value) < rules["min_length"]:
        raise ValueError(f"at least {rules['min_length']} characters are expected")
    if rules["max_length"] is not None and len(value) > rules["max_length"]:
        raise ValueError(f"at most {rules['max_length']} characters are allowed")
    if rules["pattern"] is not None and not rules["pattern"].fullmatch(value):
        raise ValueError(f"must match {rules['pattern'].pattern}")
    if rules["ge"] is not None and value < rules["ge"]:
        raise ValueError(f"must be at least {rules['ge']}")
    if rules["aware"] and value.tzinfo is None:
        raise ValueError("the time needs an offset (UTC)")
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        text = value.isoformat()
        return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text
    return value


@dataclasses.dataclass(kw_only=True)
class _Payload:
    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            try:
                setattr(self, field.name, _check(field, getattr(self, field.name)))
            except ValueError as exc:
                raise ValueError(f"{type(self).__name__}.{field.name}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Unknown fields are ignored so that newer publishers stay compatible."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: a JSON object is expected")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{name: value for name, value in data.items() if name in known})
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"{cls.__name__}: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form as a dict, without the fields that are None."""
        return {
            field.name: _json_value(value)
            for field in dataclasses.fields(self)
            if (value := getattr(self, field.name)) is not None
        }

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(kw_only=True)
class OutboxWakeup(_Payload):
    message_id: int


@dataclasses.dataclass(kw_only=True)
class ModemState(_Payload):
    modem_id: str
    online: bool
    ts: datetime
    sim_card_id: int | None = None
    iccid: str | None = None
    imsi: str | None = None
    imei: str | None = None
    number: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    device_path: str | None = None
    operator: str | None = None
    registration: str | None = None
    signal_quality: int | None = None  # +CSQ rssi index 0..31, 99 unknown
    signal_dbm: int | None = None
    queue_depth: int | None = None
    last_error: str | None = None
    reason: str | None = None  # why offline: "unplugged", "lwt", "shutdown", ...
    # Where the modem is (docs/deployment.md, "Several sites"); None: the centre.
    node: str | None = dataclasses.field(default=None, metadata=bounds(pattern=NAME_PATTERN))
    site: str | None = dataclasses.field(default=None, metadata=bounds(pattern=NAME_PATTERN))
    journal_backlog: int | None = dataclasses.field(
        default=None, metadata=bounds(ge=0)
    )  # facts from the modem not yet in Postgres


@dataclasses.dataclass(kw_only=True)
class ModemCommand(_Payload):
    command: str = dataclasses.field(metadata=bounds(choices=("ussd", "restart", "refresh")))
    request_id: str = dataclasses.field(metadata=bounds(min_length=1, max_length=64))
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(kw_only=True)
class ModemCommandReply(_Payload):
    request_id: str
    ok: bool
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None


@dataclasses.dataclass(kw_only=True)
class MessageEventPayload(_Payload):
    """A state change of an outbound message, or an inbound message (state
    `received`, with sender/recipient/message filled in)."""

    message_id: int
    state: str
    direction: str = dataclasses.field(default="outbound", metadata=bounds(choices=("outbound", "inbound")))
    at: datetime
    sim_card_id: int | None = None
    modem_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    message: str | None = None
    segments: int | None = None
    error_code: int | None = None
    error_text: str | None = None


@dataclasses.dataclass(kw_only=True)
class StatsReport(_Payload):
    source: str = dataclasses.field(metadata=bounds(min_length=1))
    ts: datetime = dataclasses.field(metadata=bounds(aware=True))
    rss_bytes: int | None = dataclasses.field(default=None, metadata=bounds(ge=0))
    cpu_percent: float | None = None
    cpu_seconds: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


P = TypeVar("P", bound=_Payload)


def parse(model: type[P], raw: bytes | str) -> P | None:
    try:
        return model.from_dict(json.loads(raw))
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; nesting too deep
    # for the parser is a RecursionError.
    except (ValueError, RecursionError) as exc:
        log.warning("dropping invalid %s payload: %s", model.__name__, str(exc)[:300])
        return None
