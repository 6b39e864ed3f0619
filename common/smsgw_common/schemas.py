"""Payload schemas for MQTT messages, validated on both ends.

A payload that fails validation is logged and dropped by the consumer
(`parse` returns None); it never crashes it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from smsgw_common.topics import NAME_PATTERN

log = logging.getLogger(__name__)


class _Payload(BaseModel):
    # Unknown fields are ignored so that newer publishers stay compatible.
    model_config = ConfigDict(extra="ignore")

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class OutboxWakeup(_Payload):
    message_id: int


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
    node: str | None = Field(default=None, pattern=f"^{NAME_PATTERN}$")
    site: str | None = Field(default=None, pattern=f"^{NAME_PATTERN}$")
    journal_backlog: int | None = Field(default=None, ge=0)  # facts from the modem not yet in Postgres


class ModemCommand(_Payload):
    command: Literal["ussd", "restart", "refresh"]
    request_id: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)


class ModemCommandReply(_Payload):
    request_id: str
    ok: bool
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class MessageEventPayload(_Payload):
    """A state change of an outbound message, or an inbound message (state
    `received`, with sender/recipient/message filled in)."""

    message_id: int
    state: str
    direction: Literal["outbound", "inbound"] = "outbound"
    at: datetime
    sim_card_id: int | None = None
    modem_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    message: str | None = None
    segments: int | None = None
    error_code: int | None = None
    error_text: str | None = None


class StatsReport(_Payload):
    source: str
    ts: datetime
    rss_bytes: int | None = None
    cpu_percent: float | None = None
    cpu_seconds: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


P = TypeVar("P", bound=_Payload)


def parse(model: type[P], raw: bytes | str) -> P | None:
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        log.warning("dropping invalid %s payload: %s", model.__name__, str(exc)[:300])
        return None
