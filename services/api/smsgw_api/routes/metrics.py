"""GET /metrics: Prometheus exposition (what is counted: core/metrics.py)."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from smsgw_api.core.metrics import registry
from smsgw_api.core.openapi import register

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_view():
    return Response(generate_latest(registry()), mimetype=CONTENT_TYPE_LATEST)


register(
    "/metrics",
    "GET",
    {
        "summary": "Prometheus metrics (unauthenticated; internal network only, not proxied by nginx)",
        "tags": ["meta"],
        "security": [],
        "responses": {
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    },
)
