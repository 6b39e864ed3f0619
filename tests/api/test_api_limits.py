"""SIM sending limits counted in Redis (domain/limits.py): shared by every API
process, seeded from Postgres when a counter is missing, given back on
cancel, all or nothing for batches, and Postgres when Redis is down."""

from __future__ import annotations

import logging
import socket
import threading
from contextlib import contextmanager
from datetime import UTC

import pytest
import redis as redis_lib
from sqlalchemy import text

from .api_support import api_env, count_rows, make_sim

RECIPIENT = "+4915112345678"


def send(client, persona, body):
    return client.post("/api/sms", json={"recipient": RECIPIENT, "message": "limited", **body}, headers=persona.headers)


@contextmanager
def api(database_url, redis_url, mqtt_prefix, **env):
    """Another API process, as far as routing is concerned: its own app,
    router, snapshot and connection pools."""
    from smsgw_api import create_app
    from smsgw_api.core.extensions import bus, db

    app = create_app({"ENV": api_env(database_url, redis_url, mqtt_prefix, **env), "TESTING": True})
    try:
        yield app
    finally:
        bus.stop(app)
        db.dispose(app)


@contextmanager
def only_active(engine, *sim_ids):
    """Every other SIM of this package's database inactive meanwhile."""
    with engine.begin() as conn:
        others = [
            r.id
            for r in conn.execute(
                text("SELECT id FROM sim_cards WHERE status = 'active' AND NOT (id = ANY(:ids))"),
                {"ids": list(sim_ids)},
            )
        ]
        conn.execute(text("UPDATE sim_cards SET status = 'inactive' WHERE id = ANY(:ids)"), {"ids": others})
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE sim_cards SET status = 'active' WHERE id = ANY(:ids)"), {"ids": others})


def counter_keys(redis_url, mqtt_prefix, sim_id=None) -> list[bytes]:
    r = redis_lib.Redis.from_url(redis_url)
    return list(r.scan_iter(f"{mqtt_prefix}limits{{sim}}:{'*' if sim_id is None else f'{sim_id}:*'}"))


def flush_counters(redis_url, mqtt_prefix) -> int:
    keys = counter_keys(redis_url, mqtt_prefix)
    if keys:
        redis_lib.Redis.from_url(redis_url).delete(*keys)
    return len(keys)


def counted(app, engine, sim_id):
    """(Redis counters, Postgres usage) of a SIM."""
    from smsgw_api.domain.capacity import Sim, usage_of
    from smsgw_api.routes.deps import router

    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT id, number, status, modem_id, true AS online, limit_per_minute, "
                "limit_per_day, limit_per_month FROM sim_cards WHERE id = :id"
            ),
            {"id": sim_id},
        ).one()
        pg = usage_of(conn, [sim_id]).get(sim_id)
    return router(app).counters.read([Sim(**row._mapping)])[sim_id], pg


def test_two_api_processes_together_accept_exactly_the_per_minute_limit(
    database_url, redis_url, mqtt_prefix, bob, engine
):
    limit = 4
    sim = make_sim(engine, limit_per_minute=limit)
    body = {"sim_card_id": sim.id, "on_unavailable": "fail"}
    with (
        api(database_url, redis_url, mqtt_prefix, ROUTING_CACHE_SECONDS=1) as a,
        api(database_url, redis_url, mqtt_prefix, ROUTING_CACHE_SECONDS=1) as b,
    ):
        clients = [a.test_client(), b.test_client()]
        for c in clients:  # warm both (pools, snapshot, scripts) so that the sends really overlap
            assert c.get("/api/sim-cards", headers=bob.headers).status_code == 200
        per_thread, threads = 3, 8
        start = threading.Barrier(threads)
        codes: list[int] = []
        errors: list[dict] = []

        def worker(client):
            start.wait()
            for _ in range(per_thread):
                r = send(client, bob, body)
                codes.append(r.status_code)
                if r.status_code != 200:
                    errors.append(r.get_json())

        pool = [threading.Thread(target=worker, args=(clients[i % 2],)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(30)
        assert len(codes) == threads * per_thread
        assert codes.count(200) == limit, codes
        assert codes.count(429) == threads * per_thread - limit, codes
        assert {e["code"] for e in errors} == {"sim_limit_reached"}
        assert count_rows(engine, "messages", "sim_card_id = :s", s=sim.id) == limit
        redis_usage, pg_usage = counted(a, engine, sim.id)
        assert redis_usage.minute == pg_usage.minute == limit


def test_auto_routing_in_two_processes_never_overshoots_a_limit(database_url, redis_url, mqtt_prefix, bob, engine):
    """Each process's snapshot is minutes old; only the shared counters know
    what the other process routed."""
    sim = make_sim(engine, limit_per_minute=3)
    with (
        only_active(engine, sim.id),
        api(database_url, redis_url, mqtt_prefix, ROUTING_CACHE_SECONDS=300) as a,
        api(database_url, redis_url, mqtt_prefix, ROUTING_CACHE_SECONDS=300) as b,
    ):
        clients = [a.test_client(), b.test_client()]
        answers = [send(clients[i % 2], bob, {}) for i in range(6)]
        codes = [r.status_code for r in answers]
        assert codes == [200, 200, 200, 429, 429, 429], codes
        assert answers[-1].get_json()["code"] == "sim_limits_reached"
        assert answers[-1].headers["Retry-After"] == "60"
        assert count_rows(engine, "messages", "sim_card_id = :s", s=sim.id) == 3


def test_counters_missing_from_redis_are_seeded_from_postgres(
    database_url, redis_url, mqtt_prefix, bob, engine, client, app
):
    sim = make_sim(engine, limit_per_minute=3, limit_per_day=100, limit_per_month=1000)
    body = {"sim_card_id": sim.id, "on_unavailable": "fail"}
    assert [send(client, bob, body).status_code for _ in range(2)] == [200, 200]
    assert counter_keys(redis_url, mqtt_prefix, sim.id), "the usage is not counted in Redis"
    redis_usage, pg_usage = counted(app, engine, sim.id)
    assert (redis_usage.minute, redis_usage.day, redis_usage.month) == (2, 2, 2)
    assert redis_usage == pg_usage

    assert flush_counters(redis_url, mqtt_prefix) >= 3  # as after a Redis restart without persistence
    # A restarted API process (nothing in memory) and the running one agree with Postgres.
    with api(database_url, redis_url, mqtt_prefix) as restarted:
        assert send(restarted.test_client(), bob, body).status_code == 200
        r = send(client, bob, body)
        assert r.status_code == 429 and r.get_json()["code"] == "sim_limit_reached"
        redis_usage, pg_usage = counted(restarted, engine, sim.id)
        assert redis_usage == pg_usage and redis_usage.minute == 3 and redis_usage.month == 3
    listed = {s["id"]: s for s in client.get("/api/sim-cards", headers=bob.headers).get_json()["sim_cards"]}
    assert listed[sim.id]["usage"] == {"minute": 3, "day": 3, "month": 3}


def test_counter_keys_expire_by_themselves(redis_url, mqtt_prefix, bob, client, engine):
    sim = make_sim(engine, limit_per_minute=10, limit_per_day=10, limit_per_month=10)
    assert send(client, bob, {"sim_card_id": sim.id}).status_code == 200
    r = redis_lib.Redis.from_url(redis_url)
    keys = counter_keys(redis_url, mqtt_prefix, sim.id)
    assert len(keys) == 3
    for key in keys:
        ttl = r.ttl(key)
        assert 0 < ttl <= 32 * 86400, (key, ttl)


def test_a_cancel_gives_the_capacity_back(client, bob, engine, app):
    sim = make_sim(engine, limit_per_minute=2)
    body = {"sim_card_id": sim.id, "on_unavailable": "fail"}
    first, second = send(client, bob, body), send(client, bob, body)
    assert first.status_code == second.status_code == 200
    assert send(client, bob, body).status_code == 429
    r = client.post(f"/api/sms/{first.get_json()['message_id']}/cancel", headers=bob.headers)
    assert r.status_code == 200
    assert send(client, bob, body).status_code == 200
    r = send(client, bob, body)
    assert r.status_code == 429 and r.get_json()["code"] == "sim_limit_reached"
    redis_usage, pg_usage = counted(app, engine, sim.id)
    assert redis_usage == pg_usage and redis_usage.minute == 2


def test_a_pinned_sim_at_its_limit_queues_when_the_client_waits(client, bob, engine, app):
    sim = make_sim(engine, limit_per_minute=1)
    assert send(client, bob, {"sim_card_id": sim.id, "on_unavailable": "fail"}).status_code == 200
    r = send(client, bob, {"sim_card_id": sim.id})  # on_unavailable defaults to wait
    assert r.status_code == 200 and r.get_json()["sim_card_id"] == sim.id
    redis_usage, pg_usage = counted(app, engine, sim.id)
    assert redis_usage == pg_usage and redis_usage.minute == 2  # counted, as Postgres counts it


def test_a_batch_reserves_all_or_nothing(client, bob, engine, app):
    sim = make_sim(engine, limit_per_minute=3)
    # Distinct texts: a batch refuses the same text twice to one recipient.
    items = [
        {"recipient": RECIPIENT, "message": f"batch {i}", "sim_card_id": sim.id, "on_unavailable": "fail"}
        for i in range(4)
    ]
    r = client.post("/api/sms/batch", json={"messages": items}, headers=bob.headers)
    assert r.status_code == 429 and r.get_json()["code"] == "sim_limit_reached"
    assert r.get_json()["index"] == 3
    assert count_rows(engine, "messages", "sim_card_id = :s", s=sim.id) == 0
    redis_usage, _ = counted(app, engine, sim.id)
    assert redis_usage is None or redis_usage.minute == 0  # nothing stayed reserved
    r = client.post("/api/sms/batch", json={"messages": items[:3]}, headers=bob.headers)
    assert r.status_code == 201, r.get_json()
    assert send(client, bob, {"sim_card_id": sim.id, "on_unavailable": "fail"}).status_code == 429


def test_a_batch_spreads_over_sims_with_capacity(client, bob, engine):
    small, large = make_sim(engine, limit_per_minute=2), make_sim(engine, limit_per_minute=10)
    with only_active(engine, small.id, large.id):
        r = client.post(
            "/api/sms/batch",
            json={"recipients": [f"+1555000{i:04d}" for i in range(8)], "message": "spread"},
            headers=bob.headers,
        )
        assert r.status_code == 201, r.get_json()
        used = [m["sim_card_id"] for m in r.get_json()["messages"]]
        assert used.count(small.id) == 2 and used.count(large.id) == 6
        r = client.post(
            "/api/sms/batch",
            json={"recipients": [f"+1555000{i:04d}" for i in range(5)], "message": "too many"},
            headers=bob.headers,
        )
        assert r.status_code == 429 and r.get_json()["code"] == "sim_limits_reached"
        assert r.get_json()["index"] == 4
        assert count_rows(engine, "messages", "sim_card_id = ANY(:s)", s=[small.id, large.id]) == 8


def test_a_limit_set_through_the_api_counts_what_was_sent_before(client, alice, bob, engine):
    sim = make_sim(engine)
    for _ in range(3):
        assert send(client, bob, {"sim_card_id": sim.id}).status_code == 200
    r = client.put(f"/api/sim-cards/{sim.id}", json={"limit_per_minute": 4}, headers=alice.headers)
    assert r.status_code == 200 and r.get_json()["sim_card"]["usage"]["minute"] == 3
    body = {"sim_card_id": sim.id, "on_unavailable": "fail"}
    assert send(client, bob, body).status_code == 200
    assert send(client, bob, body).status_code == 429
    # Lifted and set again: the counters start from Postgres, not from before.
    assert (
        client.put(f"/api/sim-cards/{sim.id}", json={"limit_per_minute": None}, headers=alice.headers).status_code
        == 200
    )
    assert send(client, bob, {"sim_card_id": sim.id}).status_code == 200  # not counted in Redis meanwhile
    assert (
        client.put(f"/api/sim-cards/{sim.id}", json={"limit_per_minute": 6}, headers=alice.headers).status_code == 200
    )
    assert send(client, bob, body).status_code == 200  # the 6th
    assert send(client, bob, body).status_code == 429


def test_a_rerouted_message_counts_for_its_new_sim(app, engine, client, bob):
    from smsgw_api.domain.capacity import Move
    from smsgw_api.routes.deps import router

    old, new = make_sim(engine, limit_per_minute=5), make_sim(engine, limit_per_minute=5)
    for s in (old, new):
        assert send(client, bob, {"sim_card_id": s.id}).status_code == 200
    message_id = send(client, bob, {"sim_card_id": old.id}).get_json()["message_id"]
    with engine.begin() as conn:  # what the sweeper does, then tells the router
        row = conn.execute(
            text("UPDATE messages SET sim_card_id = :new WHERE id = :id RETURNING segments, timestamp"),
            {"new": new.id, "id": message_id},
        ).one()
    router(app).moved([Move(row.segments, old.id, new.id, row.timestamp)])
    for s, expected in ((old, 1), (new, 2)):
        redis_usage, pg_usage = counted(app, engine, s.id)
        assert redis_usage == pg_usage and redis_usage.minute == expected


def test_without_redis_limits_are_counted_from_postgres(database_url, mqtt_prefix, bob, engine, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    sim = make_sim(engine, limit_per_minute=2)
    body = {"sim_card_id": sim.id, "on_unavailable": "fail"}
    with (
        caplog.at_level(logging.WARNING, logger="smsgw_api.domain.routing"),
        api(database_url, f"redis://127.0.0.1:{closed_port}/0", mqtt_prefix) as down,
    ):
        c = down.test_client()
        assert [send(c, bob, body).status_code for _ in range(3)] == [200, 200, 429]
        unpinned = send(c, bob, {})
        assert unpinned.status_code == 200 and unpinned.get_json()["sim_card_id"] != sim.id
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("minute", [0, 1])
def test_windows_follow_the_utc_calendar(minute):
    from datetime import datetime

    from smsgw_api.domain.limits import windows

    at = datetime(2024, 12, 31, 23, 59 - minute, 30, tzinfo=UTC).timestamp()
    w = windows(at)
    assert (w.day, w.month) == ("20241231", "202412")
    assert w.day_start == datetime(2024, 12, 31, tzinfo=UTC)
    assert w.month_start == datetime(2024, 12, 1, tzinfo=UTC)
    assert w.day_ttl == 30 + 60 * minute + 120 and w.month_ttl == w.day_ttl


def test_the_minute_is_a_rolling_window_of_60_seconds(client, bob, engine, redis_url, mqtt_prefix):
    import time

    sim = make_sim(engine, limit_per_minute=3)
    body = {"sim_card_id": sim.id, "on_unavailable": "fail"}
    assert send(client, bob, body).status_code == 200  # seeds the SIM's minute hash
    [minute_key] = [k for k in counter_keys(redis_url, mqtt_prefix, sim.id) if k.endswith(b":minute")]
    now = int(time.time())
    r = redis_lib.Redis.from_url(redis_url)
    r.hset(minute_key, str(now - 70), 100)  # left the window: trimmed, not counted
    r.hset(minute_key, str(now - 50), 1)  # still inside it
    assert send(client, bob, body).status_code == 200
    assert send(client, bob, body).status_code == 429
    assert not r.hexists(minute_key, str(now - 70))


def test_the_sweeper_moves_work_only_into_room_the_counters_still_have(app, engine):
    """Found in CI (tests/board/test_mixed.py): the sweeper judged a SIM's room
    from Postgres alone, while an API process had just counted a send there in
    Redis that was not committed yet. Its move went through and the SIM ended
    a minute over its limit (and the other SIM accepted one too many)."""
    from sqlalchemy.orm import Session

    from smsgw_api.core.extensions import runtime
    from smsgw_api.domain.capacity import RouteRequest
    from smsgw_api.pipeline.sweeper import sweep_once
    from smsgw_api.routes.deps import router
    from smsgw_common.models import Message

    busy, taker = make_sim(engine), make_sim(engine, limit_per_minute=2)

    def add(sim_id: int, status: str) -> int:
        with Session(engine) as s:
            msg = Message(direction="outbound", recipient=RECIPIENT, message="x", status=status, sim_card_id=sim_id)
            s.add(msg)
            s.commit()
            return msg.id

    with only_active(engine, busy.id, taker.id), app.app_context():
        with engine.begin() as conn:  # other tests' work would be rerouted onto these two
            conn.execute(
                text(
                    "UPDATE messages SET status = 'cancelled' WHERE status = 'queued' AND NOT (sim_card_id = ANY(:ids))"
                ),
                {"ids": [busy.id, taker.id]},
            )
        add(taker.id, "delivered")  # one of its two this minute
        waiting = [add(busy.id, "queued") for _ in range(3)]  # three in the other's queue: worth evening out
        # An API process has just routed a send to the taker: counted in Redis, not committed yet.
        with engine.connect() as conn:
            [(_, in_flight)] = router(app).route(conn, [RouteRequest(1, taker.id, "fail")])
        assert in_flight is not None

        sweep_once(runtime(app), router(app))

        with Session(engine) as s:
            assert [s.get(Message, i).sim_card_id for i in waiting] == [busy.id] * 3  # no room: nothing moved
        assert counted(app, engine, taker.id)[0].minute == 2

        # The send was not committed after all: its room is back, and one message may move.
        router(app).release([in_flight])
        sweep_once(runtime(app), router(app))

        with Session(engine) as s:
            assert sorted(s.get(Message, i).sim_card_id for i in waiting) == sorted([busy.id] * 2 + [taker.id])
        redis_usage, pg_usage = counted(app, engine, taker.id)
        assert redis_usage.minute == pg_usage.minute == 2
