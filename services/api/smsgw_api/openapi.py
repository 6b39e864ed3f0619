"""The OpenAPI document, assembled from a registry every module extends.

Any module that adds a route documents it next to the code:

    from smsgw_api.openapi import register
    register("/api/webhooks/<int:hook_id>", "DELETE", {"summary": "Delete a webhook", "tags": ["webhooks"]})

Paths may use Flask's `<int:name>` form; they are turned into `{name}`.
A test compares the document with `app.url_map`, so a route without an
entry (or an entry without a route) fails the build.
"""
from __future__ import annotations

import copy
import re

from flask import Blueprint, jsonify

_FLASK_PARAM = re.compile(r"<(?:(?P<conv>[a-z]+):)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")
_REGISTRY: dict[str, dict[str, dict]] = {}

ERROR_RESPONSE = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_path(path: str) -> str:
    return _FLASK_PARAM.sub(lambda m: "{" + m.group("name") + "}", path)


def _path_params(path: str) -> list[dict]:
    params = []
    for m in _FLASK_PARAM.finditer(path):
        schema = {"type": "integer"} if m.group("conv") == "int" else {"type": "string"}
        params.append({"name": m.group("name"), "in": "path", "required": True, "schema": schema})
    return params


def register(path: str, method: str, spec: dict | None = None) -> None:
    """Document one operation. Registering twice replaces the first entry."""
    spec = copy.deepcopy(spec or {})
    spec.setdefault("summary", f"{method.upper()} {openapi_path(path)}")
    spec.setdefault("responses", {"200": {"description": "OK"}})
    spec["responses"].setdefault("default", ERROR_RESPONSE)
    params = _path_params(path)
    if params:
        spec["parameters"] = params + [p for p in spec.get("parameters", []) if p.get("in") != "path"]
    _REGISTRY.setdefault(openapi_path(path), {})[method.lower()] = spec


def registered() -> dict[str, dict[str, dict]]:
    return copy.deepcopy(_REGISTRY)


def json_body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def query(name: str, type_: str = "string", description: str = "", **schema) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": type_, **schema}}


PAGINATION_PARAMS = [
    query("page", "integer", "1-based page number", minimum=1),
    query("per_page", "integer", "page size (bounded by PAGE_SIZE_MAX)", minimum=1),
    query("before_id", "integer", "keyset cursor: only rows with a smaller id (faster than page)"),
]


def document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Edge SMS Gateway API",
            "version": "1.0.0",
            "description": "Seed-compatible REST API of the Edge SMS Gateway. Authenticate with "
                           "`X-API-Key` or `Authorization: Bearer <jwt>` (from POST /api/auth).",
        },
        "paths": {path: ops for path, ops in sorted(_REGISTRY.items())},
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "schemas": {
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
                "Pagination": {
                    "type": "object",
                    "properties": {
                        "page": {"type": "integer", "nullable": True},
                        "per_page": {"type": "integer"},
                        "total": {"type": "integer", "nullable": True},
                        "next_before_id": {"type": "integer", "nullable": True},
                    },
                },
            },
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
    }


bp = Blueprint("openapi", __name__)


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(document())


register("/api/openapi.json", "GET", {"summary": "This OpenAPI document", "tags": ["meta"], "security": []})
