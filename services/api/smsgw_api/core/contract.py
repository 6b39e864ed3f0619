"""Request contracts: pydantic models that both validate a request and
describe it in the OpenAPI document (core/openapi.py), so the two cannot
drift apart. The models themselves live in domain/requests.py; here are the
field types every model shares and the bridge to the one error format.

A model's field type says everything the door checks about that field:
its JSON type, its length, which characters it may hold, the window a time
must fall in. A refusal is a 400 `validation_error` whose `fields` name each
problem by its JSON path (`messages[3].send_at`), as the seed's clients and
docs/api-contract.md expect.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic import ValidationError as PydanticError
from pydantic_core import ErrorDetails, core_schema

from smsgw_api.core.errors import ValidationError

INT_MAX = 2**31 - 1  # a Postgres integer column
BIGINT_MAX = 2**63 - 1

# Times a client may send (docs/api-contract.md, "Validation"): Python's
# datetime and Postgres' timestamptz share only years 1..9999, and a year
# 10000 or 1 BC written by one is unreadable to the other, so every time is
# held well inside that range, normalised to UTC.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)

M = TypeVar("M", bound=BaseModel)


class RequestModel(BaseModel):
    """A request body or query: unknown keys are ignored (the seed's clients
    send extras such as `api_key`), the input is never echoed in errors."""

    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True, frozen=True)


class StrictRequestModel(RequestModel):
    """A body whose unknown keys are refused (edits of stored rows, where a
    typo would otherwise silently change nothing)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)


# --- characters --------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
_TEXT_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # keeps \t \n \r
_LINE_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def lone_surrogate(value: str) -> bool:
    return _SURROGATE.search(value) is not None


def _text_check(pattern: re.Pattern[str], what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            if lone_surrogate(value):
                raise ValueError("must not contain a lone UTF-16 surrogate (not a character)")
            bad = pattern.search(value)
            if bad:
                name = unicodedata.name(bad.group(), f"U+{ord(bad.group()):04X}")
                raise ValueError(f"must not contain control characters ({name}); {what}")
        return value

    return check


# Metadata for `Annotated[str, LINE, Field(max_length=...)]`: one line of
# text (a name, a label, a username) or free text that may span lines (an
# SMS, a note: tabs and newlines only). Neither takes a lone surrogate.
LINE = BeforeValidator(_text_check(_LINE_CONTROLS, "a single line of text"))
TEXT = BeforeValidator(_text_check(_TEXT_CONTROLS, "only tabs and newlines are allowed"))


# --- numbers -------------------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    # pydantic reads true as 1; here a boolean where a number belongs is a client bug.
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite integer")
    return value


# `Annotated[int, NO_BOOL, Field(ge=1, le=INT_MAX)]`: an integer (JSON
# number or decimal string) that fits its column.
NO_BOOL = BeforeValidator(_no_bool)


def _flag(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]


# --- times ---------------------------------------------------------------------------


def parse_instant(value: Any) -> datetime:
    """ISO 8601 (a naive time is UTC) or Unix seconds (the seed's format), as
    an aware UTC datetime inside [EARLIEST, LATEST); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 time or a Unix timestamp")
    if isinstance(value, (int, float)) or (
        isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value.strip())
    ):
        try:
            seconds = float(value)
        except (OverflowError, ValueError):
            raise ValueError("timestamp out of range") from None
        if not math.isfinite(seconds) or not EARLIEST.timestamp() <= seconds < LATEST.timestamp():
            raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year} (Unix seconds)")
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 time or a Unix timestamp")
    text = value.strip()
    if len(text) > 64:
        raise ValueError("is not an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        # Year 1 at +14:00 or 9999-12-31 at -14:00 is outside what datetime holds in UTC.
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year}") from None
    if not EARLIEST <= parsed < LATEST:
        raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year}")
    return parsed


def _window_text(delta: timedelta) -> str:
    days = delta.days
    if days >= 365:
        years = days // 365
        return f"{years} year{'s' if years > 1 else ''}"
    return f"{days} day{'s' if days != 1 else ''}"


@dataclass(frozen=True)
class Window:
    """`Annotated[datetime, Window(past=..., future=...)]`: a time (see
    parse_instant) at most `past` ago and at most `future` ahead of now,
    documented as ISO 8601 or Unix seconds with its window."""

    past: timedelta | None = None
    future: timedelta | None = None
    description: str = ""

    def check(self, value: Any) -> datetime:
        when = parse_instant(value)
        now = datetime.now(UTC)
        if self.future is not None and when > now + self.future:
            raise ValueError(f"must be at most {_window_text(self.future)} ahead")
        if self.past is not None and when < now - self.past:
            raise ValueError(f"must be at most {_window_text(self.past)} in the past")
        return when

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        window = []
        if self.past is not None:
            window.append(f"at most {_window_text(self.past)} ago")
        if self.future is not None:
            window.append(f"at most {_window_text(self.future)} ahead")
        doc = self.description or "ISO 8601 (naive = UTC) or Unix seconds"
        if window:
            doc += "; " + " and ".join(window)
        return {
            "anyOf": [
                {"type": "string", "format": "date-time", "maxLength": 64},
                {"type": "number", "minimum": EARLIEST.timestamp(), "maximum": LATEST.timestamp()},
            ],
            "description": doc,
        }


def blank_is_none(value: Any) -> Any:
    """The seed's clients send "" for "not given"."""
    return None if value == "" else value


BLANK_IS_NONE = BeforeValidator(blank_is_none)


# --- queries ---------------------------------------------------------------------


class QueryModel(RequestModel):
    @model_validator(mode="before")
    @classmethod
    def _drop_blank(cls, data: Any) -> Any:
        # `?status=` means "no filter", as it always has.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v not in ("", None)}
        return data


class Pagination(QueryModel):
    page: Annotated[int, NO_BOOL, Field(ge=1, le=100_000, description="1-based page number")] | None = None
    per_page: (
        Annotated[int, NO_BOOL, Field(ge=1, le=100_000, description="page size (at most PAGE_SIZE_MAX)")] | None
    ) = None
    before_id: (
        Annotated[int, NO_BOOL, Field(ge=1, le=BIGINT_MAX, description="keyset cursor: rows with a smaller id")] | None
    ) = None


class TimeWindow(QueryModel):
    since: Annotated[datetime, Window(description="at or after")] | None = None
    until: Annotated[datetime, Window(description="before")] | None = None


# --- the bridge to the one error format ----------------------------------------------


def _path(loc: tuple, prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-before", "function-after", "function-wrap"):
            continue
        else:
            out += ("." if out and not out.endswith(".") else "") + str(part)
    return out or "body"


_TYPE_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "extra_forbidden": "unknown field",
    "datetime_type": "must be an ISO 8601 time or a Unix timestamp",
}


def _message(err: ErrorDetails) -> str:
    kind, ctx = err["type"], dict(err.get("ctx") or {})
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_too_short":
        return (
            "is required and cannot be empty"
            if ctx.get("min_length") == 1
            else f"must be at least {ctx['min_length']} characters"
        )
    # A length constraint inside a union is reported as too_long/too_short
    # whatever the type; the input says whether it counted characters.
    units = "character" if isinstance(err.get("input"), str) else "item"
    if kind in ("too_long", "too_short"):
        bound = ctx["max_length"] if kind == "too_long" else ctx["min_length"]
        return f"must have at {'most' if kind == 'too_long' else 'least'} {bound} {units}{'s' if bound != 1 else ''}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}".replace("'", "")
    if kind == "enum":
        return f"must be one of {ctx['expected']}".replace("'", "")
    if kind == "string_pattern_mismatch":
        return "has characters that are not allowed here"
    return err["msg"]


def errors_to_fields(exc: PydanticError, prefix: str = "") -> dict[str, str]:
    fields: dict[str, str] = {}
    # The input is read only to tell strings from lists; it never reaches the answer.
    for err in exc.errors(include_url=False):
        fields.setdefault(_path(tuple(err["loc"]), prefix), _message(err))
    return fields


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    """`data` as `model`, or a 400 naming every field that is wrong."""
    try:
        return model.model_validate(data)
    except PydanticError as exc:
        raise ValidationError(errors_to_fields(exc, prefix)) from None
