"""One error format everywhere (docs/api-contract.md):

    {"error": msg, "message": msg, "code": "machine_code", "fields": {...}}

`error` is the seed's key and `message` is what the seed's own handlers
returned, so old clients find their text either way. Raise `ApiError`
(or a subclass) anywhere; Werkzeug's HTTP errors and crashes get the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    status = 400

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        fields: dict | None = None,
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code or DEFAULT_CODES.get(self.status, "error")
        self.fields = fields
        self.headers = headers or {}
        self.extra = extra or {}


class ValidationError(ApiError):
    """A field is missing or invalid: 400, as the seed answered."""

    status = 400

    def __init__(self, fields: dict[str, str], message: str | None = None, **kw):
        if message is None:
            message = "; ".join(f"{k}: {v}" for k, v in fields.items()) or "invalid input"
        kw.setdefault("code", "validation_error")
        super().__init__(message, fields=fields, **kw)


class NotFound(ApiError):
    status = 404


class Forbidden(ApiError):
    status = 403


class Unauthorized(ApiError):
    status = 401


class Conflict(ApiError):
    status = 409


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    fields: dict | None = None,
    headers: dict | None = None,
    extra: dict | None = None,
):
    body: dict[str, Any] = {"error": message, "message": message, "code": code or DEFAULT_CODES.get(status, "error")}
    if fields:
        body["fields"] = fields
    if extra:
        body.update(extra)
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.fields, exc.headers, exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        messages = {
            404: f"no such endpoint: {request.path}",
            405: f"method {request.method} is not allowed on {request.path}",
            413: "request body is too large",
        }
        message = messages.get(status) or exc.description or exc.name
        headers = {}
        valid_methods = getattr(exc, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(sorted(valid_methods))
        return error_response(status, message, headers=headers)

    @app.errorhandler(OperationalError)
    def _db_down(exc):
        log.error("database error: %s", str(exc.orig)[:300] if getattr(exc, "orig", None) else exc)
        return error_response(
            503,
            "the database is not reachable; try again shortly",
            "database_unavailable",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(PoolTimeout)
    def _pool_exhausted(exc):
        # Every connection of this worker's pool stayed busy for pool_timeout:
        # the database is overloaded (or slow), not this request wrong.
        log.error("database connection pool exhausted: %s", exc)
        return error_response(
            503, "the database is busy; try again shortly", "database_busy", headers={"Retry-After": "1"}
        )

    @app.errorhandler(Exception)
    def _crash(exc):
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return error_response(500, "internal error; the request id in X-Request-ID helps find it in the logs")
