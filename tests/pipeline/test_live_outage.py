"""Live events across a Redis outage (issue 12, item 4).

Redis carries every Socket.IO event from the events leader to the sockets of
every API process, and its pub/sub keeps nothing. These tests point an API
(two gunicorn workers, so a socket may sit on either) at a redis-server of
their own, kill it with dashboards connected, make events happen, start it
again, and count what each dashboard got: every event once and in order, or
a plain "resync" when more happened than the leader holds.
"""

from __future__ import annotations

import pytest
from support.mqtt import Publisher
from support.private_redis import PrivateRedis
from support.waits import holds_for

from smsgw_api.core.settings import PipelineSettings
from smsgw_common.models import Modem
from smsgw_common.settings import SettingsError

from .conftest import (
    add_modem_and_sim,
    add_outbound,
    running_api,
    socket_opener,
    wait_until,
)

BUFFER = 12  # LIVE_BUFFER_EVENTS of this module's API
HEARTBEAT = 0.5  # LIVE_HEARTBEAT_SECONDS
# Long enough that python-socketio's own listener, backing off 1, 2, 4, 8 s
# between attempts, would still be asleep when Redis comes back.
OUTAGE_SECONDS = 8.0


@pytest.fixture(scope="module")
def redis_server():
    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def outage_env(pipeline_env, redis_server):
    # A prefix of its own: its leader election and its MQTT session must not
    # meet the tier's API, which runs on the shared Redis.
    return dict(
        pipeline_env,
        REDIS_URL=redis_server.url,
        MQTT_PREFIX=pipeline_env["MQTT_PREFIX"] + "outage/",
        LIVE_BUFFER_EVENTS=str(BUFFER),
        LIVE_HEARTBEAT_SECONDS=str(HEARTBEAT),
    )


@pytest.fixture(scope="module")
def outage_api(outage_env, python, tmp_path_factory, people):
    with running_api(outage_env, python, tmp_path_factory.mktemp("outage-api")) as server:
        yield server


@pytest.fixture(scope="module")
def publisher(outage_env):
    client = Publisher(outage_env["MQTT_PREFIX"])
    yield client
    client.close()


@pytest.fixture
def dashboards(outage_api):
    with socket_opener(outage_api.base) as connect:
        yield connect


@pytest.fixture
def outbound(db_session, people):
    """n queued messages on a fresh modem, and a function that says each is sent."""
    modem_id, sim_id = add_modem_and_sim(db_session)

    def make(n: int):
        ids = [add_outbound(db_session, sim_id, people["bob"].user_id, pinned=True) for _ in range(n)]
        return ids, modem_id, sim_id

    return make


def say_sent(publisher, ids, modem_id, sim_id):
    for mid in ids:
        publisher.message_event(message_id=mid, state="sent", sim_card_id=sim_id, modem_id=modem_id)


def updates_for(sock, ids):
    return sock.seen("sms_status_update", lambda d: d["message_id"] in ids)


def test_events_made_while_redis_is_down_reach_every_dashboard_in_order_when_it_returns(
    outage_api, redis_server, dashboards, people, publisher, outbound
):
    ids, modem_id, sim_id = outbound(BUFFER - 2)
    socks = [dashboards(people["carol"]) for _ in range(4)]  # spread over both API workers
    # The leader waits for as many listeners as its last publish reached. A
    # beat each socket hears was published after both processes subscribed
    # (running_api waits for that), so it reached both. Killing Redis before
    # any such beat tests nothing the gateway promises: found under CPU load,
    # where the kill beat the first beat after the second subscription, the
    # leader expected one listener and flushed while the other re-subscribed.
    for sock in socks:
        sock.wait_for("live_heartbeat", lambda d: d["audience"] == "viewer", timeout=5)
    redis_server.kill()
    try:
        say_sent(publisher, ids, modem_id, sim_id)
        holds_for(
            lambda: not any(updates_for(s, ids) for s in socks),
            OUTAGE_SECONDS,
            0.2,
            "nothing reaches a dashboard while Redis is down",
        )
    finally:
        redis_server.start()
    for sock in socks:
        wait_until(
            lambda sock=sock: len(updates_for(sock, ids)) >= len(ids),
            15,
            0.1,
            lambda sock=sock: f"all {len(ids)} held events; this socket got {len(updates_for(sock, ids))}",
        )
    holds_for(lambda: all(len(updates_for(s, ids)) == len(ids) for s in socks), 0.5, 0.05, "each event once")
    for sock in socks:
        got = updates_for(sock, ids)
        assert [d["message_id"] for d in got] == ids
        # Numbered without a hole: nothing in between was lost either.
        seqs = [d["feed"]["seq"] for d in got]
        assert seqs == list(range(seqs[0], seqs[0] + len(ids)))
        assert {d["feed"]["audience"] for d in got} == {"viewer"}
        assert not sock.seen("live_resync")


def test_past_the_buffer_every_dashboard_is_told_to_resync_from_the_api(
    outage_api, redis_server, dashboards, people, publisher, outbound
):
    ids, modem_id, sim_id = outbound(BUFFER + 3)
    socks = [dashboards(people["carol"]) for _ in range(3)]
    before = socks[0].wait_for("live_heartbeat", lambda d: d["audience"] == "viewer")
    redis_server.kill()
    try:
        say_sent(publisher, ids, modem_id, sim_id)
        wait_until(lambda: "live events dropped" in outage_api.log(), 15, 0.2, "the leader to give up holding events")
    finally:
        redis_server.start()
    for sock in socks:
        told = sock.wait_for("live_resync", lambda d: d["audience"] == "viewer", timeout=15)
        assert told["stream"] == before["stream"]
        # Where the feed stands now: the client's next event follows on from it.
        assert told["seq"] >= before["seq"] + len(ids)
        assert told["dropped"] >= BUFFER + 1
    # What was dropped is not replayed after the resync, and the feed goes on.
    say_sent(publisher, ids[:1], modem_id, sim_id)
    for sock in socks:
        after = sock.wait_for("sms_status_update", lambda d: d["message_id"] == ids[0])
        assert after["feed"]["seq"] == sock.seen("live_resync")[-1]["seq"] + 1
        assert len(updates_for(sock, ids)) == 1


def test_the_leader_beats_with_each_audiences_position_and_falls_silent_in_an_outage(
    outage_api, redis_server, dashboards, people, publisher, outbound
):
    viewer, admin = dashboards(people["carol"]), dashboards(people["alice"])
    ids, modem_id, sim_id = outbound(1)
    say_sent(publisher, ids, modem_id, sim_id)
    event = viewer.wait_for("sms_status_update", lambda d: d["message_id"] == ids[0])
    beat = viewer.wait_for(
        "live_heartbeat", lambda d: d["audience"] == "viewer" and d["seq"] >= event["feed"]["seq"], timeout=5
    )
    assert beat["stream"] == event["feed"]["stream"] and beat["every"] == HEARTBEAT
    for audience in ("viewer", "user", "admin"):
        admin.wait_for("live_heartbeat", lambda d, a=audience: d["audience"] == a, timeout=5)
    # A viewer is not told how many admin-only events there were.
    assert {d["audience"] for d in viewer.seen("live_heartbeat")} == {"viewer"}
    redis_server.kill()
    try:
        # Each API process tells its own sockets at once, not through Redis.
        assert viewer.wait_for("live_interrupted", timeout=5) == {"reason": "redis unreachable"}
        admin.wait_for("live_interrupted", timeout=5)
        # One beat may have been on its way when Redis died.
        beats = len(viewer.seen("live_heartbeat"))
        holds_for(lambda: len(viewer.seen("live_heartbeat")) <= beats + 1, 3.0, 0.1, "no heartbeat while Redis is down")
    finally:
        redis_server.start()
    silent = len(viewer.seen("live_heartbeat"))
    wait_until(lambda: len(viewer.seen("live_heartbeat")) > silent, 10, 0.05, "the heartbeat to come back")


def test_a_modem_lost_during_the_outage_is_recorded_and_reaches_the_dashboard_when_redis_returns(
    outage_api, redis_server, dashboards, people, publisher, db_session
):
    modem_id, sim_id = add_modem_and_sim(db_session)
    sock = dashboards(people["carol"])
    publisher.modem_state(modem_id, True, signal_quality=20, sim_card_id=sim_id)
    sock.wait_for("modem_status", lambda d: d["modem_id"] == modem_id and d["online"])
    redis_server.kill()
    try:
        publisher.modem_state(modem_id, False, last_error="serial port lost", sim_card_id=sim_id)
        # Postgres says it whatever Redis does: the sweeper reroutes on it.
        wait_until(lambda: modem_online(db_session, modem_id) is False, 10, 0.1, "the modem recorded offline")
    finally:
        redis_server.start()
    got = sock.wait_for("modem_status", lambda d: d["modem_id"] == modem_id and not d["online"], timeout=15)
    assert got["last_error"] == "serial port lost"


def modem_online(db_session, modem_id: str) -> bool | None:
    with db_session() as s:
        modem = s.get(Modem, modem_id)
        return None if modem is None else modem.online


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("LIVE_BUFFER_EVENTS", "-1", "LIVE_BUFFER_EVENTS must be 0 or more"),
        ("LIVE_BUFFER_EVENTS", "lots", "LIVE_BUFFER_EVENTS must be an integer"),
        ("LIVE_HEARTBEAT_SECONDS", "0", "LIVE_HEARTBEAT_SECONDS must be between"),
        ("LIVE_HEARTBEAT_SECONDS", "120", "LIVE_HEARTBEAT_SECONDS must be between"),
    ],
)
def test_it_refuses_a_live_feed_setting_out_of_range(name, value, problem):
    with pytest.raises(SettingsError, match=problem):
        PipelineSettings.from_env({name: value})
