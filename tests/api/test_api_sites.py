"""Site-aware routing (domain/routing.py, docs/deployment.md "Several sites"):
a message bound to a site goes only through SIMs there; a recipient prefix
prefers a site's SIMs while one there is online; the sweeper keeps both when
it moves work. Every path that chooses a SIM is covered: one message and a
batch, unlimited SIMs, limited ones (the Redis script), and Redis down (the
Postgres fallback)."""

from __future__ import annotations

import secrets
import socket
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from smsgw_common.models import Message

from .api_support import make_sim
from .test_api_limits import api, only_active


def site_name() -> str:
    return f"site-{secrets.token_hex(3)}"


def put_at(engine, sims, site: str | None, online: bool | None = None) -> None:
    """Move the SIMs' modems to a site (what their workers' SITE reports)."""
    with engine.begin() as conn:
        for sim in sims:
            conn.execute(text("UPDATE modems SET site = :site WHERE id = :id"), {"site": site, "id": sim.modem_id})
            if online is not None:
                conn.execute(text("UPDATE modems SET online = :on WHERE id = :id"), {"on": online, "id": sim.modem_id})


def number(prefix: str) -> str:
    return prefix + "".join(secrets.choice("0123456789") for _ in range(14 - len(prefix)))


@contextmanager
def prefixes(client, admin, mapping: dict[str, str]):
    r = client.put(
        "/api/sites/prefixes",
        json={"prefixes": [{"prefix": p, "site": s} for p, s in mapping.items()]},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.get_json()
    try:
        yield
    finally:  # the list is global: other tests route without it
        assert client.put("/api/sites/prefixes", json={"prefixes": []}, headers=admin.headers).status_code == 200


def send(client, who, recipient: str, **options):
    return client.post("/api/sms", json={"recipient": recipient, "message": "hello", **options}, headers=who.headers)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["unlimited", "limited", "redis-down"])
def routing(request, client, database_url, mqtt_prefix):
    """(a test client, the SIM limits to give) for each way a SIM is chosen."""
    if request.param == "redis-down":
        with api(database_url, f"redis://127.0.0.1:{closed_port()}/0", mqtt_prefix) as down:
            yield down.test_client(), {"limit_per_minute": 1000}
    else:
        yield client, ({"limit_per_minute": 1000} if request.param == "limited" else {})


def test_a_prefix_prefers_its_sites_sims_and_an_online_sim_elsewhere_beats_an_offline_one_there(
    routing, client, alice, bob, engine
):
    c, limits = routing
    de, fr = site_name(), site_name()
    at_de = [make_sim(engine, **limits) for _ in range(2)]
    at_fr = make_sim(engine, **limits)
    put_at(engine, at_de, de)
    put_at(engine, [at_fr], fr)
    prefix = "+88216" + str(secrets.randbelow(90) + 10)
    # Other SIMs have shorter queues than these two once they take five; the prefix still wins.
    with prefixes(client, alice, {prefix: de}):
        chosen = [send(c, bob, number(prefix)).get_json()["sim_card_id"] for _ in range(5)]
        assert set(chosen) <= {s.id for s in at_de}, chosen
        assert len(set(chosen)) == 2  # spread over the site's SIMs by queue
        batch = c.post(
            "/api/sms/batch",
            json={"messages": [{"recipient": number(prefix), "message": f"b{i}"} for i in range(3)]},
            headers=bob.headers,
        )
        assert batch.status_code == 201, batch.get_json()
        assert {m["sim_card_id"] for m in batch.get_json()["messages"]} <= {s.id for s in at_de}

        put_at(engine, at_de, de, online=False)  # the site's node is cut off
        elsewhere = send(c, bob, number(prefix)).get_json()
        assert elsewhere["sim_card_id"] not in {s.id for s in at_de}


def test_a_message_bound_to_a_site_goes_only_there_and_waits_or_fails_as_asked(routing, bob, engine):
    c, limits = routing
    site = site_name()
    there = make_sim(engine, **limits)
    put_at(engine, [there], site)

    r = send(c, bob, number("+4916"), site=site)
    assert r.status_code == 200 and r.get_json()["sim_card_id"] == there.id
    with Session(engine) as s:
        assert s.get(Message, r.get_json()["message_id"]).site == site

    put_at(engine, [there], site, online=False)
    refused = send(c, bob, number("+4916"), site=site, on_unavailable="fail")
    assert refused.status_code == 503
    assert refused.get_json()["code"] == "site_unavailable" and site in refused.get_json()["error"]
    waits = send(c, bob, number("+4916"), site=site, on_unavailable="wait")
    assert waits.status_code == 200 and waits.get_json()["sim_card_id"] == there.id

    in_batch = c.post(
        "/api/sms/batch",
        json={"recipients": [number("+4916"), number("+4916")], "message": "to all", "site": site},
        headers=bob.headers,
    )
    assert in_batch.status_code == 201, in_batch.get_json()
    assert {m["sim_card_id"] for m in in_batch.get_json()["messages"]} == {there.id}


@pytest.mark.parametrize(
    "options, field",
    [
        ({"site": "nowhere-" + secrets.token_hex(3)}, "site"),
        ({"site": "a/b"}, "site"),
        ({"site": "x" * 65}, "site"),
        ({"site": 7}, "site"),
        ({"site": "berlin", "sim_card_id": 1}, "site"),
    ],
)
def test_a_site_no_sim_is_at_or_a_malformed_one_is_refused_with_the_field(client, bob, engine, options, field):
    before = engine.connect().execute(text("SELECT count(*) FROM messages")).scalar()
    r = send(client, bob, number("+4916"), **options)
    assert r.status_code == 400, r.get_json()
    assert field in r.get_json()["fields"], r.get_json()
    assert engine.connect().execute(text("SELECT count(*) FROM messages")).scalar() == before


def test_sites_are_listed_for_every_role_and_only_admins_set_prefixes(client, alice, bob, charlie, engine):
    site, neighbour = site_name(), site_name()
    online, next_door = make_sim(engine), make_sim(engine)
    put_at(engine, [online, make_sim(engine, online=False)], site)
    put_at(engine, [next_door], neighbour)
    body = {"prefixes": [{"prefix": "0088217", "site": site}, {"prefix": "+8821799", "site": site}]}
    assert client.put("/api/sites/prefixes", json=body, headers=bob.headers).status_code == 403
    try:
        r = client.put("/api/sites/prefixes", json=body, headers=alice.headers)
        assert r.status_code == 200, r.get_json()
        listing = client.get("/api/sites", headers=charlie.headers).get_json()
        mine = next(s for s in listing["sites"] if s["site"] == site)
        assert (mine["modems"], mine["online"], mine["active_sims"]) == (2, 1, 2)
        assert mine["prefixes"] == ["+88217", "+8821799"]  # 00 is the same as +
        # The longest prefix wins.
        with prefixes(client, alice, {"+88217": neighbour, "+8821799": site}):
            assert send(client, bob, number("+8821799")).get_json()["sim_card_id"] == online.id
            assert send(client, bob, number("+8821700")).get_json()["sim_card_id"] == next_door.id
    finally:
        client.put("/api/sites/prefixes", json={"prefixes": []}, headers=alice.headers)


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"prefix": "49", "site": "de"}, "prefixes[0].prefix"),
        ({"prefix": "+", "site": "de"}, "prefixes[0].prefix"),
        ({"prefix": "+1234567890123456", "site": "de"}, "prefixes[0].prefix"),
        ({"prefix": "+４9", "site": "de"}, "prefixes[0].prefix"),
        ({"prefix": "+49", "site": "d e"}, "prefixes[0].site"),
        ({"prefix": "+49", "site": "de", "extra": 1}, "prefixes[0].extra"),
    ],
)
def test_a_bad_prefix_list_is_refused_whole_and_the_old_one_kept(client, alice, entry, problem):
    with prefixes(client, alice, {"+88218": "kept"}):
        r = client.put("/api/sites/prefixes", json={"prefixes": [entry]}, headers=alice.headers)
        assert r.status_code == 400 and problem in r.get_json()["fields"], r.get_json()
        assert client.get("/api/sites", headers=alice.headers).get_json()["prefixes"] == [
            {"prefix": "+88218", "site": "kept"}
        ]


def test_a_repeated_prefix_is_refused(client, alice):
    body = {"prefixes": [{"prefix": "+88219", "site": "a"}, {"prefix": "0088219", "site": "b"}]}
    r = client.put("/api/sites/prefixes", json=body, headers=alice.headers)
    assert r.status_code == 400 and "prefixes[1].prefix" in r.get_json()["fields"]


def _add(engine, sim_id: int, **fields) -> int:
    with Session(engine) as s:
        msg = Message(direction="outbound", recipient=number("+4916"), message="x", status="queued", sim_card_id=sim_id)
        for k, v in fields.items():
            setattr(msg, k, v)
        s.add(msg)
        s.commit()
        return msg.id


def _sims_of(engine, ids) -> list[int | None]:
    with Session(engine) as s:
        return [s.get(Message, i).sim_card_id for i in ids]


def test_the_sweeper_moves_site_bound_work_only_within_its_site(app, engine):
    from smsgw_api.core.extensions import runtime
    from smsgw_api.pipeline.sweeper import sweep_once
    from smsgw_api.routes.deps import router

    de, fr = site_name(), site_name()
    dead, alive = make_sim(engine), make_sim(engine)
    other = make_sim(engine)
    put_at(engine, [dead, alive], de)
    put_at(engine, [other], fr)
    with only_active(engine, dead.id, alive.id, other.id), app.app_context():
        with engine.begin() as conn:  # other tests' queued work would move onto these
            conn.execute(
                text(
                    "UPDATE messages SET status = 'cancelled' WHERE status = 'queued' AND NOT (sim_card_id = ANY(:ids))"
                ),
                {"ids": [dead.id, alive.id, other.id]},
            )
        bound = [_add(engine, dead.id, site=de) for _ in range(2)]
        for _ in range(3):  # the site's other SIM is busier than the other site's: the site still wins
            _add(engine, alive.id)
        put_at(engine, [dead], de, online=False)
        sweep_once(runtime(app), router(app))
        assert _sims_of(engine, bound) == [alive.id, alive.id]

        # The whole site is down: bound work waits, or fails when asked to.
        waits, fails = _add(engine, alive.id, site=de), _add(engine, alive.id, site=de, on_unavailable="fail")
        put_at(engine, [alive], de, online=False)
        sweep_once(runtime(app), router(app))
        with Session(engine) as s:
            w, f = s.get(Message, waits), s.get(Message, fails)
            assert (w.status, w.sim_card_id) == ("queued", alive.id)
            assert f.status == "failed" and f"no SIM at site {de} can send" in f.error_text
            # Unbound work on the dead site goes elsewhere.
            unbound = s.scalars(
                text(
                    "SELECT id FROM messages WHERE sim_card_id = :a AND site IS NULL AND status = 'queued'"
                ).bindparams(a=alive.id)
            ).all()
        assert unbound == []


def test_the_sweeper_evens_queues_out_within_a_site_only(app, engine):
    from smsgw_api.core.extensions import runtime
    from smsgw_api.pipeline.sweeper import sweep_once
    from smsgw_api.routes.deps import router

    de, fr = site_name(), site_name()
    busy, idle, abroad = make_sim(engine), make_sim(engine), make_sim(engine)
    put_at(engine, [busy, idle], de)
    put_at(engine, [abroad], fr)
    with only_active(engine, busy.id, idle.id, abroad.id), app.app_context():
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE messages SET status = 'cancelled' WHERE status = 'queued' AND NOT (sim_card_id = ANY(:ids))"
                ),
                {"ids": [busy.id, idle.id, abroad.id]},
            )
        queued = [_add(engine, busy.id) for _ in range(6)]
        sweep_once(runtime(app), router(app))
        where = _sims_of(engine, queued)
        assert where.count(busy.id) == 3 and where.count(idle.id) == 3 and abroad.id not in where
