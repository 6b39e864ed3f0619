"""Request plumbing every blueprint shares: the request id, the JSON body,
pagination parameters, timestamps, the audit trail and CORS."""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import time
from datetime import datetime

from flask import Flask, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from smsgw_api.core.contract import INT_MAX, M, Pagination, parse_instant, validate
from smsgw_api.core.errors import ApiError, ValidationError
from smsgw_api.core.extensions import db
from smsgw_common import jsonlog
from smsgw_common.models import Log
from smsgw_common.settings import env_bool

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def settings():
    return current_app.config["SMSGW_SETTINGS"]


def request_id() -> str | None:
    return g.get("request_id")


def client_ip() -> str | None:
    """The caller's address. Behind our one trusted proxy (TRUST_PROXY) it is
    the LAST X-Forwarded-For entry: nginx sets that header to the address it
    saw ($remote_addr), and if a proxy appends instead, whatever is left of
    the last entry was written by the client and can be forged (to fake the
    audit trail's ip or to dodge the per-address login limit)."""
    if settings().trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            try:
                return str(ipaddress.ip_address(last))[:64]
            except ValueError:
                pass  # not an address a proxy would write: use the peer's
    return (request.remote_addr or "")[:64] or None


# JSON shape limits, checked on the raw bytes before the parser recurses
# (json.loads of 100,000 nested brackets is a RecursionError). No body of
# this API nests deeper than 4; a batch of MAX_BATCH_SIZE messages has far
# fewer than MAX_JSON_ELEMENTS values.
MAX_JSON_DEPTH = 32
MAX_JSON_ELEMENTS = 20_000
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
# Where a lone surrogate can hide in a JSON body: an escape (\ud800) or
# its raw UTF-8 form, which json.loads reads with "surrogatepass".
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def check_json_shape(raw: bytes) -> None:
    """400 for a body nested deeper than MAX_JSON_DEPTH or holding more than
    MAX_JSON_ELEMENTS values, before anything parses it."""
    opens = raw.count(b"[") + raw.count(b"{")
    if opens <= MAX_JSON_DEPTH and raw.count(b",") < MAX_JSON_ELEMENTS:
        return  # nearly every body: too few brackets to be deep
    # Brackets and commas inside strings do not count.
    bare = _JSON_STRING.sub(b'""', raw)
    if bare.count(b",") >= MAX_JSON_ELEMENTS:
        raise ApiError(
            f"the JSON body has more than {MAX_JSON_ELEMENTS} values",
            400,
            "json_too_large",
            fields={"body": "too many values"},
        )
    depth = 0
    for m in _JSON_BRACKET.finditer(bare):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ApiError(
                    f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels",
                    400,
                    "json_too_deep",
                    fields={"body": f"nested deeper than {MAX_JSON_DEPTH} levels"},
                )
        else:
            depth -= 1


def _bad_string_path(value, path: str, bad) -> str | None:
    """The JSON path of the first string (or key) in `value` for which `bad` holds."""
    if isinstance(value, str):
        return path if bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if bad(str(key)):
                return name
            found = _bad_string_path(item, name, bad)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _bad_string_path(item, f"{path}[{i}]" if path else f"[{i}]", bad)
            if found:
                return found
    return None


def _nul_error(field: str) -> ValidationError:
    return ValidationError({field: "must not contain a NUL character (\\u0000)"}, code="nul_character")


def _surrogate_error(field: str) -> ValidationError:
    # The field's name itself may hold the surrogate: it cannot be written in the answer.
    field = _SURROGATES.sub("", field) or "body"
    return ValidationError({field: "must not contain a lone UTF-16 surrogate (not a character)"}, code="invalid_text")


def reject_nul_characters() -> None:
    """One check for every request, before authentication and the views: a
    NUL cannot be stored in a Postgres text column (psycopg2 refuses to send
    it), so a NUL in the path, a query parameter, a header or anywhere in a
    JSON body is a 400 that names the field, not a crash deep in a query.
    The same for a lone surrogate in a JSON body (no UTF-8 can encode it),
    and for a body too deep or too large to parse safely."""
    if "\x00" in request.path:
        raise _nul_error("path")
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            raise _nul_error(key.replace("\x00", "") or "query")
    for key, value in request.headers.items():
        if "\x00" in value:
            raise _nul_error(key)
    if not request.is_json:
        return
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        return  # json_body() answers 413
    check_json_shape(raw)
    # A NUL can only be in valid JSON as the escape \u0000; skip the walk
    # for the bodies (nearly all) that do not contain one.
    if b"\\u0000" in raw:
        found = _bad_string_path(request.get_json(silent=True), "", lambda s: "\x00" in s)
        if found is not None:
            raise _nul_error(found or "body")
    if _MAYBE_SURROGATE.search(raw):
        found = _bad_string_path(request.get_json(silent=True), "", lambda s: _SURROGATES.search(s) is not None)
        if found is not None:
            raise _surrogate_error(found)


def json_body() -> dict:
    """The request's JSON object, or a 4xx that says what is wrong with it."""
    if request.content_length and request.content_length > settings().max_body_bytes:
        raise ApiError(f"request body is larger than {settings().max_body_bytes} bytes", 413)
    if not request.is_json:
        raise ApiError("Content-Type must be application/json", 415, "unsupported_media_type")
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(f"request body is larger than {settings().max_body_bytes} bytes", 413) from None
    if not raw.strip():
        raise ApiError("request body is empty; send a JSON object", 400, "invalid_json")
    check_json_shape(raw)
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError("request body is not valid JSON", 400, "invalid_json")
    if not isinstance(data, dict):
        raise ApiError("request body must be a JSON object", 400, "invalid_json")
    return data


def body(model: type[M]) -> M:
    """The request's JSON body as `model` (domain/requests.py), or a 400."""
    return validate(model, json_body())


def query(model: type[M]) -> M:
    """The query string as `model`, or a 400 naming the parameter."""
    return validate(model, request.args.to_dict())


def parse_int(value, name: str, minimum: int | None = None, maximum: int | None = INT_MAX) -> int:
    """An integer (JSON number or decimal string) within bounds; by default
    one that fits an integer column."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError({name: "must be an integer"})
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity
        raise ValidationError({name: "must be an integer"}) from None
    if isinstance(value, float) and value != number:
        raise ValidationError({name: "must be an integer"})
    if minimum is not None and number < minimum:
        raise ValidationError({name: f"must be at least {minimum}"})
    if maximum is not None and number > maximum:
        raise ValidationError({name: f"must be at most {maximum}"})
    return number


def parse_time(value, name: str) -> datetime:
    """ISO 8601 (a naive time is UTC) or a Unix timestamp (the seed's format),
    in UTC and inside the window every stored time keeps (core/contract.py)."""
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise ValidationError({name: str(exc)}) from None


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def seed_time(value: datetime | None) -> dict:
    """The seed's `timestamp` (whole Unix seconds, as its clients parse it)
    and the same instant as ISO 8601 in `created_at`."""
    if value is None:
        return {"timestamp": None, "created_at": None}
    return {"timestamp": int(value.timestamp()), "created_at": value.isoformat()}


class Page:
    """`?page=&per_page=` or `?before_id=` (keyset: constant time at any depth)."""

    def __init__(self, params: Pagination | None = None):
        s = settings()
        params = params if params is not None else query(Pagination)
        self.per_page = parse_int(
            params.per_page if params.per_page is not None else s.default_page_size, "per_page", 1, s.max_page_size
        )
        self.before_id = params.before_id
        self.page = None if self.before_id is not None else (params.page or 1)

    @property
    def offset(self) -> int:
        return 0 if self.page is None else (self.page - 1) * self.per_page

    def meta(self, rows: list, total: int | None, id_of=lambda r: r["id"]) -> dict:
        has_more = len(rows) > self.per_page
        next_before = id_of(rows[self.per_page - 1]) if has_more else None
        return {"page": self.page, "per_page": self.per_page, "total": total, "next_before_id": next_before}


def audit(
    action: str, details: str | None = None, status: str = "success", sender_sim: str | None = None, session=None
) -> None:
    """Add an audit row to the request's transaction: it commits or rolls back
    with the change it describes."""
    principal = g.get("smsgw_principal")
    row = Log(
        action=action,
        details=details,
        status=status,
        sender_sim=sender_sim,
        user_id=principal.user_id if principal else None,
        actor=principal.actor if principal else None,
        ip=client_ip(),
        request_id=request_id(),
    )
    (session or db.session).add(row)


SLOW_REQUEST_SECONDS = 1.0
access_log = logging.getLogger("smsgw_api.access")


def _log_request(response) -> None:
    """The one access line per request (ACCESS_LOG=false turns it off): JSON
    with the request id from the log context and, for a send, the message id,
    so a message can be followed from here to the modem worker's lines."""
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    if not current_app.config["SMSGW_ACCESS_LOG"] or route == "/metrics":
        return
    started = g.get("_started")
    elapsed = time.perf_counter() - started if started else 0.0
    status = response.status_code
    level = logging.ERROR if status >= 500 else logging.WARNING if elapsed > SLOW_REQUEST_SECONDS else logging.INFO
    principal = g.get("smsgw_principal")
    fields = {
        "http_method": request.method,
        "route": route,
        "path": request.path,
        "status": status,
        "duration_ms": round(elapsed * 1000, 2),
        "ip": client_ip(),
        "user": principal.username if principal else None,
    }
    if g.get("message_id") is not None:  # set by the route that created a message
        fields["message_id"] = g.message_id
    access_log.log(level, "%s %s %s", request.method, request.path, status, extra=fields)


def init_app(app: Flask) -> None:
    s = app.config["SMSGW_SETTINGS"]
    app.config["MAX_CONTENT_LENGTH"] = s.max_body_bytes
    app.config.setdefault("SMSGW_ACCESS_LOG", env_bool("ACCESS_LOG", True))
    allowed = set(s.cors_allowed_origins)

    @app.before_request
    def _request_id():
        incoming = request.headers.get("X-Request-ID", "")
        # Not uuid4: os.urandom per request is measurably slow on small
        # VMs, and a request id needs to be unique, not unguessable.
        g.request_id = incoming if _REQUEST_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        g._log_token = jsonlog.bind(request_id=g.request_id)
        g._started = time.perf_counter()
        if request.method == "OPTIONS" and request.headers.get("Origin") in allowed:
            return current_app.make_default_options_response()
        reject_nul_characters()
        return None

    @app.after_request
    def _headers(response):
        _log_request(response)
        rid = g.get("request_id")
        if rid:
            response.headers["X-Request-ID"] = rid
        origin = request.headers.get("Origin")
        if origin and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, X-API-Key, Idempotency-Key, X-Request-ID"
            )
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"
            response.headers["Access-Control-Max-Age"] = "600"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.teardown_request
    def _unbind(exc):
        token = g.pop("_log_token", None)
        if token is not None:
            try:
                jsonlog.context.reset(token)
            except ValueError:
                pass
