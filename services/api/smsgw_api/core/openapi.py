"""The OpenAPI document, assembled from a registry every module extends.

Any module that adds a route documents it next to the code, with the same
pydantic models (domain/requests.py) the route validates with, so the
document cannot say something the route does not do:

    from smsgw_api.core.openapi import ok, register
    register(
        "/api/webhooks",
        "POST",
        {"summary": "Register a webhook", "tags": ["webhooks"], "responses": {"201": ok({"id": INT})}},
        body=CreateWebhook,
    )

Paths may use Flask's `<int:name>` form; they are turned into `{name}`.
Tests compare the document with `app.url_map` (a route without an entry,
or an entry without a route, fails the build) and require every operation
to describe its success and error responses and every body and query to
come from a model.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import BaseModel

_FLASK_PARAM = re.compile(r"<(?:(?P<conv>[a-z]+):)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")
_REGISTRY: dict[str, dict[str, dict]] = {}
_SCHEMAS: dict[str, dict] = {}
_REF = "#/components/schemas/{model}"

ERROR_RESPONSE = {
    "description": "Error (the one format: core/errors.py)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
# Answered by the HTTP server in front of the app (gunicorn past 4094 bytes
# of request line, nginx past its header buffers), in its own HTML.
URI_TOO_LONG = {
    "description": "Request line too long, answered by the HTTP server before the API (its own HTML page)",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
NO_BODY = "none"  # `body=NO_BODY`: the operation reads no request body

# Shorthands for response schemas.
INT = {"type": "integer"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
NUM = {"type": "number"}
TIME = {"type": ["string", "null"], "format": "date-time"}
OBJ = {"type": "object"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict | None = None, required: list[str] | None = None) -> dict:
    """An object schema; `required` defaults to every property named."""
    properties = properties or {}
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


def stored_row(properties: dict, required: list[str] | None = None) -> dict:
    """A row read from the database: as described, or, when some of its
    values could not be read, with those null and named in `unreadable_fields`
    (core/rowjson.py; docs/api-contract.md, "Rows the gateway cannot read")."""
    flagged = {
        "type": "object",
        "properties": {"id": {}, "unreadable_fields": array(STR)},
        "required": ["id", "unreadable_fields"],
    }
    return {"anyOf": [obj(properties, required), flagged]}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def ok(properties: dict | None = None, description: str = "OK", required: list[str] | None = None) -> dict:
    """A JSON success response whose body is an object with these properties."""
    return {"description": description, "content": {"application/json": {"schema": obj(properties, required)}}}


def model_schema(model: type[BaseModel]) -> dict:
    """`model`'s JSON schema, its nested models moved to components."""
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        _SCHEMAS[name] = sub
    _SCHEMAS[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _query_params(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        prop.pop("default", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def openapi_path(path: str) -> str:
    return _FLASK_PARAM.sub(lambda m: "{" + m.group("name") + "}", path)


def _path_params(path: str) -> list[dict]:
    params = []
    for m in _FLASK_PARAM.finditer(path):
        conv = m.group("conv")
        if conv == "int":
            # Flask's int converter: ASCII digits, no sign; the ids are bigint columns.
            schema: dict = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
        elif conv == "uuid":
            schema = {"type": "string", "format": "uuid"}
        elif conv == "path":
            schema = {"type": "string", "minLength": 1, "maxLength": 64}
        else:
            schema = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^/]+$"}
        params.append({"name": m.group("name"), "in": "path", "required": True, "schema": schema})
    return params


def register(
    path: str,
    method: str,
    spec: dict | None = None,
    *,
    body: type[BaseModel] | str | None = None,
    body_required: bool = True,
    query: type[BaseModel] | None = None,
) -> None:
    """Document one operation. Registering twice replaces the first entry.

    `body` is the model the route validates its JSON body with (or NO_BODY),
    `query` the model of its query string."""
    spec = copy.deepcopy(spec or {})
    spec.setdefault("summary", f"{method.upper()} {openapi_path(path)}")
    spec.setdefault("responses", {"200": {"description": "OK"}})
    spec["responses"].setdefault("default", ERROR_RESPONSE)
    spec["responses"].setdefault("400", {**ERROR_RESPONSE, "description": "Invalid input; `fields` names each problem"})
    for code, response in spec["responses"].items():
        if code[0] in "45" and "content" not in response:
            response["content"] = ERROR_RESPONSE["content"]
    spec["responses"].setdefault("414", URI_TOO_LONG)
    if isinstance(body, type):
        spec["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": model_schema(body)}},
        }
        spec["x-request-model"] = body.__name__
    elif body == NO_BODY:
        spec["x-request-model"] = NO_BODY
    params = _path_params(path)
    if query is not None:
        params += _query_params(query)
        spec["x-query-model"] = query.__name__
    params += [p for p in spec.get("parameters", []) if p.get("in") not in ("path", "query")]
    if params:
        spec["parameters"] = params
    _REGISTRY.setdefault(openapi_path(path), {})[method.lower()] = spec


def registered() -> dict[str, dict[str, dict]]:
    return copy.deepcopy(_REGISTRY)


PAGINATION = {
    "type": "object",
    "required": ["page", "per_page", "total", "next_before_id"],
    "properties": {
        "page": {"type": ["integer", "null"]},
        "per_page": {"type": "integer"},
        "total": {"type": ["integer", "null"]},
        "next_before_id": {"type": ["integer", "null"]},
        "has_more": {"type": "boolean"},
        "total_capped": {"type": "boolean"},
    },
}
PAGINATION_REF = {"$ref": "#/components/schemas/Pagination"}


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Edge SMS Gateway API",
            "version": "1.0.0",
            "description": "Seed-compatible REST API of the Edge SMS Gateway. Authenticate with "
            "`X-API-Key` or `Authorization: Bearer <jwt>` (from POST /api/auth).",
        },
        "paths": dict(sorted(_REGISTRY.items())),
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {
                **dict(sorted(_SCHEMAS.items())),
                "Error": {
                    "type": "object",
                    "required": ["error", "message", "code"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "code": {"type": "string"},
                        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "Pagination": PAGINATION,
            },
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
    }
