"""GET /healthz (the process answers) and GET /readyz (it can do its job:
database, broker and Redis reachable). Neither needs authentication."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify
from sqlalchemy import text

from .extensions import bus, db, redis_client
from .openapi import register

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _check(fn) -> dict:
    started = time.monotonic()
    try:
        fn()
        return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
    except Exception as exc:
        return {"ok": False, "error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}


def _db():
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _broker():
    # The first call starts the process's client; give it a moment to connect.
    if not bus.get().wait_connected(1.0):
        raise ConnectionError(f"not connected to the MQTT broker at {bus.state().settings.host}:"
                              f"{bus.state().settings.port}")


def _redis():
    redis_client.ping()


@bp.get("/readyz")
def readyz():
    checks = {"database": _check(_db), "broker": _check(_broker), "redis": _check(_redis)}
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    if not ready:
        failing = ", ".join(k for k, c in checks.items() if not c["ok"])
        body.update(error=f"not ready: {failing} unreachable", message=f"not ready: {failing} unreachable",
                    code="not_ready")
    return jsonify(body), 200 if ready else 503


register("/healthz", "GET", {"summary": "Liveness", "tags": ["meta"], "security": []})
register("/readyz", "GET", {"summary": "Readiness: database, broker and Redis", "tags": ["meta"], "security": [],
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}})
