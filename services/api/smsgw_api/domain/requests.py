"""Every request body and query the API takes, as pydantic models: the one
source for what a route accepts and for its OpenAPI description
(`register(..., body=Model, query=Model)`). The field types and the error
format are core/contract.py; the rules and windows are listed in
docs/api-contract.md ("Validation").

Rules that need the database or settings (a pinned SIM exists, a text fits
MAX_SEGMENTS, a webhook URL is allowed) stay in the routes, after the model.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema, model_validator

from smsgw_api.core.contract import (
    BLANK_IS_NONE,
    INT_MAX,
    LINE,
    NO_BOOL,
    TEXT,
    Flag,
    Pagination,
    QueryModel,
    RequestModel,
    StrictRequestModel,
    TimeWindow,
    Window,
    blank_is_none,
    lone_surrogate,
)
from smsgw_api.domain.accounts import MIN_PASSWORD_LENGTH, USERNAME_PATTERN
from smsgw_api.domain.numbers import MAX_NUMBER_LENGTH, e164
from smsgw_api.domain.webhooks import EVENT_TYPES
from smsgw_common.models import PRIORITIES, ROLES
from smsgw_common.topics import NAME_PATTERN

# --- windows (docs/api-contract.md) ---------------------------------------------------

SEND_AT_FUTURE = timedelta(days=366)
SEND_AT_PAST = timedelta(days=7)  # a past send_at means "now"; older is a client's clock or bug
EXPIRES_AT_FUTURE = timedelta(days=3653)  # 10 years, for messages and API keys alike
MAX_TEXT_CHARS = 5000  # far above MAX_SEGMENTS x 153; checked before counting segments
MAX_BATCH_ITEMS = 10_000  # the body's shape; MAX_BATCH_SIZE (settings) is the real limit

# --- field types --------------------------------------------------------------------------


def _recipient(value: str) -> str:
    return e164(value, international=True)


def _sim_number(value: str) -> str:
    return e164(value, international=False)


Recipient = Annotated[
    str,
    LINE,
    Field(
        min_length=1,
        max_length=MAX_NUMBER_LENGTH,
        description="E.164 with its country code (+ or 00), e.g. +4915112345678; spaces, dashes, dots allowed",
    ),
    AfterValidator(_recipient),
]
PhoneNumber = Annotated[
    str,
    LINE,
    Field(min_length=1, max_length=MAX_NUMBER_LENGTH, description="E.164; a missing + is added"),
    AfterValidator(_sim_number),
]


def _secret_check(value: Any) -> Any:
    if isinstance(value, str) and lone_surrogate(value):
        raise ValueError("must not contain a lone UTF-16 surrogate (not a character)")
    return value


# A password: any character but a lone surrogate, bounded.
SECRET = BeforeValidator(_secret_check)
Password = Annotated[str, SECRET, Field(max_length=1024)]
NewPassword = Annotated[str, SECRET, Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)]


def _username(value: str) -> str:
    value = value.strip()
    if not USERNAME_PATTERN.match(value):
        raise ValueError("3-64 characters: letters, digits, _ . @ -")
    return value


Username = Annotated[
    str,
    LINE,
    Field(max_length=64),
    AfterValidator(_username),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": USERNAME_PATTERN.pattern,
            "description": "3-64 characters: letters, digits, _ . @ -",
        }
    ),
]


def _sim_ref(value: Any) -> Any:
    """The SIM's id, or the seed's UUID for an imported SIM (resolved by the route)."""
    value = blank_is_none(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be an integer (or an imported SIM's seed UUID)")
    if isinstance(value, str) and len(value) > 64:
        raise ValueError("must be an integer (or an imported SIM's seed UUID)")
    return value


SimRef = Annotated[
    Any,
    BeforeValidator(_sim_ref),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": INT_MAX}, {"type": "string", "format": "uuid"}],
            "description": "pin a SIM (its id, or the seed's UUID of an imported SIM); otherwise the gateway routes",
        }
    ),
]
Priority = Literal["low", "normal", "high"]
Role = Literal["viewer", "user", "admin"]
# Spelled out for the type checker; they must stay the shared models' names.
if set(get_args(Priority)) != set(PRIORITIES) or set(get_args(Role)) != set(ROLES):
    raise RuntimeError("domain/requests.py: Priority or Role no longer matches smsgw_common.models")
SmsText = Annotated[
    str,
    TEXT,
    Field(
        max_length=MAX_TEXT_CHARS, description="the SMS text; tabs and newlines allowed, no other control characters"
    ),
]
Id = Annotated[int, NO_BOOL, Field(ge=1, le=INT_MAX)]
SendAt = Annotated[datetime, Window(past=SEND_AT_PAST, future=SEND_AT_FUTURE, description="send no earlier than")]
ExpiresAt = Annotated[datetime, Window(future=EXPIRES_AT_FUTURE, description="give up if not sent by then")]


# --- sending ------------------------------------------------------------------------------


class SendOptions(RequestModel):
    sim_card_id: SimRef = None
    site: (
        Annotated[
            str,
            LINE,
            Field(
                pattern=f"^{NAME_PATTERN}$",
                description="send only through SIMs of this site (a modem's SITE); not with sim_card_id",
            ),
        ]
        | None
    ) = None
    priority: Priority = "normal"
    send_at: Annotated[SendAt | None, BLANK_IS_NONE] = None
    expires_at: Annotated[ExpiresAt | None, BLANK_IS_NONE] = None
    on_unavailable: Literal["wait", "fail"] = "wait"


class SendMessage(SendOptions):
    """POST /api/sms (the seed's body: recipient, message, sim_card_id)."""

    recipient: Recipient
    message: SmsText


class SendBatchItems(RequestModel):
    messages: Annotated[list[SendMessage], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


_RECIPIENTS_SCHEMA = {
    "type": "array",
    "items": {"type": "string", "maxLength": MAX_NUMBER_LENGTH},
    "minItems": 1,
    "maxItems": MAX_BATCH_ITEMS,
    "description": "one message (`message` and the options beside it) to each of these",
}


class SendBatch(RequestModel):
    """POST /api/sms/batch: `messages`, or `recipients` with one `message`
    and options for all. The recipients form is checked item by item
    (`messages[i].field`) once it is spread into messages."""

    messages: Annotated[list[SendMessage], Field(min_length=1, max_length=MAX_BATCH_ITEMS)] | None = None
    recipients: Annotated[list[Any] | None, Field(max_length=MAX_BATCH_ITEMS), WithJsonSchema(_RECIPIENTS_SCHEMA)] = (
        None
    )
    message: Annotated[Any, WithJsonSchema({"type": "string", "maxLength": MAX_TEXT_CHARS})] = None


class Preview(RequestModel):
    message: Annotated[str, TEXT, Field(max_length=MAX_TEXT_CHARS)]


USSD_CODE = re.compile(r"^[0-9*#+]{1,32}$")


def _ussd(value: str) -> str:
    if not USSD_CODE.match(value.strip()):
        raise ValueError("a USSD code of digits, * and # (e.g. *100#)")
    return value.strip()


class Ussd(RequestModel):
    """A code, the reply to an open menu (`session_open` in the answer), or
    `cancel: true` to end the open session."""

    code: (
        Annotated[
            str,
            LINE,
            Field(min_length=1, max_length=40, description="digits, * and #, e.g. *100#, or a menu reply"),
            AfterValidator(_ussd),
        ]
        | None
    ) = None
    cancel: Annotated[bool, Strict()] = False

    @model_validator(mode="after")
    def _code_or_cancel(self) -> Ussd:
        if not self.cancel and self.code is None:
            raise ValueError("code: a USSD code of digits, * and # (e.g. *100#), or cancel: true")
        return self


class RawPduQuery(QueryModel):
    kind: Literal["undecodable", "incomplete_part"] | None = None
    modem_id: Annotated[str, LINE, Field(max_length=64)] | None = None
    limit: Annotated[int, NO_BOOL, Field(ge=1, le=200)] = 50
    before_id: Annotated[int, NO_BOOL, Field(ge=1, le=INT_MAX)] | None = None


# --- accounts --------------------------------------------------------------------------------


class Login(RequestModel):
    """POST /api/auth. Bounded before anything is looked up, counted or logged."""

    username: Annotated[str, LINE, Field(max_length=150)]
    password: Password


class ChangePassword(RequestModel):
    # Both optional to the model: a wrong current password is a 403 whatever
    # the new one is, and the route says what a new password must be.
    model_config = ConfigDict(json_schema_extra={"required": ["current_password", "new_password"]})

    current_password: Password | None = None
    new_password: Annotated[
        Any, WithJsonSchema({"type": "string", "minLength": MIN_PASSWORD_LENGTH, "maxLength": 256})
    ] = None


class CreateUser(RequestModel):
    username: Username
    password: NewPassword
    role: Role = "user"


class UpdateUser(StrictRequestModel):
    username: Username | None = None
    password: NewPassword | None = None
    role: Role | None = None
    is_active: Annotated[bool, Strict()] | None = None


Name = Annotated[str, LINE, Field(max_length=100)]


class CreateApiKey(RequestModel):
    name: Name | None = None
    user_id: Annotated[Id | None, BLANK_IS_NONE, Field(description="admin only: another user's key")] = None
    expires_at: Annotated[
        Annotated[datetime, Window(future=EXPIRES_AT_FUTURE, description="the key stops working then")] | None,
        BLANK_IS_NONE,
    ] = None


class ApiKeyQuery(QueryModel):
    user_id: Id | None = None
    all: Flag = False
    include_revoked: Flag = False


# --- SIM cards, opt-outs, webhooks -----------------------------------------------------------

Limit = Annotated[
    Annotated[int, NO_BOOL, Field(ge=0, le=10_000_000)] | None,
    BLANK_IS_NONE,
    Field(description="segments; null = no limit"),
]


class SimCardBody(StrictRequestModel):
    number: PhoneNumber | None = None
    status: Literal["active", "inactive"] | None = None
    label: Name | None = None
    limit_per_minute: Limit = None
    limit_per_day: Limit = None
    limit_per_month: Limit = None
    api_key: Annotated[str | None, Field(max_length=256, description="the seed's body credential")] = None

    @model_validator(mode="before")
    @classmethod
    def _blank_number(cls, data: Any) -> Any:
        # An empty number gets the seed's own message (routes/simcards.py).
        if isinstance(data, dict) and isinstance(data.get("number"), str) and not data["number"].strip():
            return {k: v for k, v in data.items() if k != "number"} | {"number": None}
        return data


# --- sites --------------------------------------------------------------------------------

MAX_SITE_PREFIXES = 1000
SiteName = Annotated[str, LINE, Field(pattern=f"^{NAME_PATTERN}$", description="a modem's SITE")]


def _prefix(value: str) -> str:
    digits = value[1:] if value.startswith("+") else value[2:] if value.startswith("00") else None
    if digits is None or not digits.isascii() or not digits.isdigit() or not 1 <= len(digits) <= 15:
        raise ValueError("a number prefix with its country code: + (or 00) and 1 to 15 digits, e.g. +49")
    return "+" + digits


class SitePrefix(StrictRequestModel):
    prefix: Annotated[str, LINE, Field(max_length=17), AfterValidator(_prefix)]
    site: SiteName


class SitePrefixes(StrictRequestModel):
    """PUT /api/sites/prefixes: the whole list, replacing the one before."""

    prefixes: Annotated[list[SitePrefix], Field(max_length=MAX_SITE_PREFIXES)]


class NewNode(StrictRequestModel):
    """POST /api/nodes. The name also makes its modem ids (`<name>-<k>`, domain/nodes.py)."""

    name: Annotated[
        str, LINE, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$", description="e.g. berlin-1; up to 48")
    ]
    site: SiteName | None = None
    modems: Annotated[int, NO_BOOL, Field(ge=1, le=16, description="modem workers it runs")] = 4


class Enrol(RequestModel):
    token: Annotated[str, LINE, Field(min_length=1, max_length=100)]


class AddOptOut(RequestModel):
    number: PhoneNumber
    note: Annotated[str, TEXT, Field(max_length=500)] | None = None


def _known_events(events: list[str]) -> list[str]:
    # One message naming every unknown event, under `events` (not one per index).
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    return events


Events = Annotated[
    list[Annotated[str, LINE, Field(max_length=64)]],
    Field(min_length=1, max_length=50),
    AfterValidator(_known_events),
    WithJsonSchema(
        {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}, "minItems": 1, "maxItems": 50}
    ),
]


class CreateWebhook(RequestModel):
    url: Annotated[str, LINE, Field(min_length=1, max_length=2048, description="http(s) URL, no credentials")]
    events: Annotated[Events, Field(default_factory=lambda: list(EVENT_TYPES))]
    secret: (
        Annotated[
            str, LINE, Field(min_length=16, max_length=128, description="16-128 characters; generated if left out")
        ]
        | None
    ) = None


# --- queries ---------------------------------------------------------------------------------


class MessageQuery(Pagination, TimeWindow):
    status: (
        Annotated[str, LINE, Field(max_length=200, description="a state, or several separated by commas")] | None
    ) = None
    number: Annotated[str, LINE, Field(max_length=MAX_NUMBER_LENGTH, description="the other party's number")] | None = (
        None
    )
    sim_card_id: Id | None = None
    q: Annotated[str, TEXT, Field(max_length=200, description="text contains (case-insensitive)")] | None = None


class LogQuery(Pagination, TimeWindow):
    action: Annotated[str, LINE, Field(max_length=100)] | None = None
    status: Annotated[str, LINE, Field(max_length=32)] | None = None
    user_id: Id | None = None


class OptOutQuery(Pagination):
    q: Annotated[str, LINE, Field(max_length=MAX_NUMBER_LENGTH, description="number contains")] | None = None


class DeliveryQuery(Pagination):
    status: Literal["pending", "delivered", "failed"] | None = None


class StatisticsQuery(QueryModel):
    window: Literal["1h", "24h", "7d", "30d"] | None = Field(default=None, description="adds `series` for this window")
    tz: (
        Annotated[
            str, LINE, Field(max_length=64, description="IANA time zone for day buckets and output times (default UTC)")
        ]
        | None
    ) = None
