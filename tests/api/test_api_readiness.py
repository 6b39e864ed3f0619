"""/readyz and /metrics say who leads and whether each background loop still
completes its rounds; a dead loop makes the process not ready.

The pipeline is started the way gunicorn starts it (`start_pipeline`, from
gunicorn_conf.post_worker_init), on a database and prefix of its own so that
its sweeper never touches the other API tests' rows."""

from __future__ import annotations

import pytest
from shared_fixtures import create_database, drop_database
from support import waits

from smsgw_api import create_app
from smsgw_api.app import start_pipeline
from smsgw_api.core.extensions import bus, db
from smsgw_api.migrate import upgrade
from smsgw_api.pipeline import loop, sweeper

from .api_support import api_env

LOOPS = {"leader-election", "events-consumer", "webhook-dispatcher", "optout-keywords", "sweeper"}


class LoopKilled(BaseException):
    """Gets past a loop's own `except Exception`, as a bug in the loop would."""


@pytest.fixture
def pipeline_app(package_id, redis_url, mqtt_prefix, request):
    name = f"smsgw_test_{package_id}_{request.node.name[:20].lower()}"
    url = create_database(name)
    try:
        upgrade(url)
        env = api_env(
            url,
            redis_url,
            mqtt_prefix + f"{request.node.name[:20]}/",
            LEADER_TTL_SECONDS="0.6",
            SWEEP_INTERVAL_SECONDS="0.2",
            PIPELINE_BACKGROUND="on",
        )
        app = create_app({"ENV": env, "TESTING": True})
        try:
            yield app
        finally:
            pipeline = app.extensions.get("smsgw_pipeline")
            if pipeline is not None:
                pipeline.stop()
            bus.stop(app)
            db.dispose(app)
    finally:
        drop_database(name)


def wait_until(predicate, timeout: float = 15.0):
    return waits.wait_until(predicate, timeout, 0.05, f"/readyz to report {predicate.__name__}")


def test_create_app_starts_no_background_work(pipeline_app):
    body = pipeline_app.test_client().get("/readyz").get_json()
    assert "pipeline" not in body
    assert "smsgw_pipeline" not in pipeline_app.extensions


def test_readyz_names_the_leader_and_each_loops_last_round(pipeline_app):
    pipeline = start_pipeline(pipeline_app)
    client = pipeline_app.test_client()

    def all_rounds_done():
        resp = client.get("/readyz")
        body = resp.get_json()
        loops = body.get("pipeline", {}).get("loops", {})
        if set(loops) == LOOPS and all(state["rounds"] > 0 for state in loops.values()):
            return resp
        return None

    resp = wait_until(all_rounds_done)
    body = resp.get_json()
    assert resp.status_code == 200 and body["status"] == "ready"
    assert set(body["checks"]) == {"database", "broker", "redis"}
    leader = body["pipeline"]["leader"]
    assert leader == {"this_process": True, "id": pipeline.leader.me, "candidate": pipeline.leader.me}
    for state in body["pipeline"]["loops"].values():
        assert state["ok"] and state["alive"]
        assert 0 <= state["seconds_since_round"] < state["stale_after"]

    metrics = client.get("/metrics").get_data(as_text=True)
    assert "smsgw_pipeline_leader 1.0" in metrics
    assert 'smsgw_pipeline_loop_age_seconds{loop="sweeper"}' in metrics


def test_a_dead_loop_makes_the_process_not_ready(pipeline_app, monkeypatch):
    def broken(*_args, **_kw):
        raise LoopKilled("the sweeper hit a bug")

    monkeypatch.setattr(sweeper, "sweep_once", broken)
    start_pipeline(pipeline_app)
    client = pipeline_app.test_client()

    def sweeper_dead():
        resp = client.get("/readyz")
        loop = resp.get_json().get("pipeline", {}).get("loops", {}).get("sweeper")
        return loop is not None and not loop["alive"] and resp

    resp = wait_until(sweeper_dead)
    body = resp.get_json()
    assert resp.status_code == 503
    assert body["status"] == "not ready" and body["code"] == "not_ready"
    assert body["message"] == "not ready: background loop sweeper dead or stuck"
    assert body["pipeline"]["loops"]["sweeper"]["alive"] is False
    assert body["pipeline"]["loops"]["webhook-dispatcher"]["ok"] is True
    assert all(c["ok"] for c in body["checks"].values())

    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'smsgw_pipeline_loop_age_seconds{loop="sweeper"} -1.0' in metrics


def test_a_loop_failing_every_round_is_stuck_and_not_ready(pipeline_app, monkeypatch):
    """Alive but never completing a round (here: every sweep fails) is as bad
    as dead once it lasts longer than the loop's bound."""

    def failing(*_args, **_kw):
        raise RuntimeError("the database refuses the sweep")

    monkeypatch.setattr(sweeper, "sweep_once", failing)
    monkeypatch.setattr(loop, "STALE_MIN_SECONDS", 1.0)  # bound: max(10 x 0.2 s, 1 s) = 2 s
    start_pipeline(pipeline_app)
    client = pipeline_app.test_client()

    def sweeper_stuck():
        resp = client.get("/readyz")
        state = resp.get_json().get("pipeline", {}).get("loops", {}).get("sweeper")
        return state is not None and not state["ok"] and resp

    resp = wait_until(sweeper_stuck)
    state = resp.get_json()["pipeline"]["loops"]["sweeper"]
    assert resp.status_code == 503
    assert state["alive"] is True and state["rounds"] == 0
    assert state["seconds_since_round"] > state["stale_after"] == 2.0
