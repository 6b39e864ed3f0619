"""GET /healthz (the process answers) and GET /readyz (it can do its job:
database, broker and Redis reachable, and, where this process runs the
pipeline, its election and loops completing rounds). Neither needs authentication."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from smsgw_api.core.extensions import bus, db, redis_client
from smsgw_api.core.liveness import PipelineStatus, pipeline_status
from smsgw_api.core.openapi import OBJ, STR, ok, register

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
        raise ConnectionError(f"not connected to the MQTT broker at {bus.state().broker}")


def _redis():
    redis_client.ping()


def _pipeline(status: PipelineStatus) -> dict:
    return {
        "ok": status.ok,
        "leader": {"this_process": status.is_leader, "id": status.leader_id, "candidate": status.me},
        "loops": {
            loop.name: {
                "ok": loop.ok,
                "alive": loop.alive,
                "rounds": loop.rounds,
                "seconds_since_round": loop.age_seconds,
                "stale_after": loop.stale_after,
            }
            for loop in status.loops
        },
    }


@bp.get("/readyz")
def readyz():
    checks = {"database": _check(_db), "broker": _check(_broker), "redis": _check(_redis)}
    status = pipeline_status(current_app)
    stuck = [loop.name for loop in status.loops if not loop.ok] if status is not None else []
    ready = all(c["ok"] for c in checks.values()) and not stuck
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    if status is not None:
        body["pipeline"] = _pipeline(status)
    if not ready:
        failing = ", ".join(k for k, c in checks.items() if not c["ok"])
        problems = [f"{failing} unreachable"] if failing else []
        problems += [f"background loop {name} dead or stuck" for name in stuck]
        message = "not ready: " + "; ".join(problems)
        body.update(error=message, message=message, code="not_ready")
    return jsonify(body), 200 if ready else 503


register(
    "/healthz",
    "GET",
    {"summary": "Liveness", "tags": ["meta"], "security": [], "responses": {"200": ok({"status": STR})}},
)
register(
    "/readyz",
    "GET",
    {
        "summary": "Readiness: database, broker, Redis and this process's background loops",
        "tags": ["meta"],
        "security": [],
        "responses": {
            "200": ok({"status": STR, "checks": OBJ}, "ready"),
            # Not the Error schema alone: the same body as 200, plus the error keys.
            "503": ok({"status": STR, "checks": OBJ, "error": STR, "message": STR, "code": STR}, "not ready"),
        },
    },
)
