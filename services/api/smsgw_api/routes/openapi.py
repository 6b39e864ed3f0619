"""GET /api/openapi.json (the document is assembled in core/openapi.py)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from smsgw_api.core.openapi import OBJ, STR, document, ok, register

bp = Blueprint("openapi", __name__)


@bp.get("/api/openapi.json")
def openapi_json():
    return jsonify(document())


register(
    "/api/openapi.json",
    "GET",
    {
        "summary": "This OpenAPI document",
        "tags": ["meta"],
        "security": [],
        "responses": {"200": ok({"openapi": STR, "info": OBJ, "paths": OBJ, "components": OBJ})},
    },
)
