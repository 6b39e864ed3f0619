"""GET /api/statistics returns the right figures for a known set of messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from smsgw_api.core.errors import ValidationError
from smsgw_common.models import Message, Modem, SimCard, StatSample

NOW = datetime.now(UTC)
RECENT = NOW - timedelta(seconds=90)
OLD = NOW - timedelta(days=3)


def _set_clock() -> None:
    """Times relative to when the data is written, not to when the module was
    imported: in a full run this module's tests start minutes after collection."""
    global NOW, RECENT, OLD
    NOW = datetime.now(UTC)
    RECENT = NOW - timedelta(seconds=90)
    OLD = NOW - timedelta(days=3)


def outbound(sim: int, status: str, ts: datetime | None = None, **kw) -> Message:
    ts = ts or RECENT
    return Message(
        direction="outbound",
        recipient="+4917000000",
        message="hi",
        status=status,
        encoding="GSM-7",
        segments=1,
        sim_card_id=sim,
        timestamp=ts,
        **kw,
    )


def inbound(sim: int, ts: datetime | None = None) -> Message:
    ts = ts or RECENT
    return Message(
        direction="inbound",
        sender="+4917000001",
        recipient="+4911",
        message="yo",
        status="received",
        encoding="GSM-7",
        segments=1,
        sim_card_id=sim,
        timestamp=ts,
        received_at=ts,
    )


@pytest.fixture
def known_set(clean):
    """Two active SIMs and an inactive one; usb0 online with SIM 1, usb1 offline."""
    _set_clock()
    with Session(clean) as s:
        s.add_all(
            [
                Modem(
                    id="usb0",
                    online=True,
                    signal_rssi=-71,
                    signal_quality=21,
                    registration="home",
                    operator="Telekom",
                    last_seen_at=NOW - timedelta(seconds=10),
                ),
                Modem(id="usb1", online=False, last_error="unplugged"),
            ]
        )
        s.flush()
        s.add_all(
            [
                SimCard(id=1, number="+4911", status="active", modem_id="usb0"),
                SimCard(id=2, number="+4922", status="active"),
                SimCard(id=3, number="+4933", status="inactive"),
            ]
        )
        s.flush()
        s.add_all([outbound(1, "delivered") for _ in range(3)])
        s.add_all([outbound(1, "failed"), outbound(1, "sent"), inbound(1), inbound(1)])
        s.add_all(
            [
                outbound(2, "delivered"),
                outbound(2, "expired"),
                outbound(2, "queued"),
                outbound(2, "queued", send_at=NOW + timedelta(hours=2)),
                outbound(2, "sending"),
                outbound(2, "delivered", ts=OLD),
            ]
        )
        s.add(
            StatSample(
                source="host",
                ts=NOW - timedelta(seconds=5),
                resolution=0,
                data={
                    "cpu": {
                        "percent": 12.5,
                        "per_core": [10.0, 15.0],
                        "count": 2,
                        "load1": 0.5,
                        "load5": 0.4,
                        "load15": 0.3,
                    },
                    "memory": {
                        "total": 8_000_000_000,
                        "available": 6_000_000_000,
                        "used": 2_000_000_000,
                        "free": 5_000_000_000,
                        "percent": 25.0,
                    },
                    "disk": {"path": "/data", "total": 100, "used": 40, "free": 60, "percent": 40.0},
                    "temperature": {"celsius": 51.2},
                    "uptime": {"boot_time": 1_700_000_000, "seconds": 3600},
                    "components": {"api-7": {"rss_bytes": 80_000_000, "cpu_percent": 1.5, "ts": NOW.isoformat()}},
                },
            )
        )
        s.commit()
    return clean


def get(client, key, **params):
    return client.get("/api/statistics", query_string=params, headers={"X-API-Key": key})


def test_it_needs_an_api_key_or_token(client):
    response = client.get("/api/statistics")
    assert response.status_code == 401
    assert response.get_json()["code"] == "auth_required"


def test_it_keeps_the_seed_shape_with_the_right_figures(client, vera_key, known_set, database_url):
    response = get(client, vera_key)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()

    m = body["messages"]
    assert (m["total_messages"], m["incoming_messages"], m["outgoing_messages"]) == (13, 2, 11)
    assert m["by_status"] == {
        "delivered": 5,
        "failed": 1,
        "sent": 1,
        "expired": 1,
        "queued": 2,
        "sending": 1,
        "received": 2,
    }
    days = m["messages_per_day"]
    assert len(days) == 7 and days[-1]["date"] == NOW.date().isoformat()
    assert sum(d["count"] for d in days) == 13
    assert {d["date"]: d["count"] for d in days}[OLD.date().isoformat()] == 1
    assert m["messages_today"] == sum(1 for ts in [RECENT] * 12 + [OLD] if ts.date() == NOW.date())

    sims = body["sim_cards"]
    assert (sims["total_sims"], sims["active_sims"], sims["inactive_sims"]) == (3, 2, 1)
    assert sims["most_used_sim"] == {"id": 1, "number": "+4911", "message_count": 7}
    assert [s["id"] for s in sims["most_used_sims"]] == [1, 2]
    assert sims["by_sim"][0] == {
        "id": 1,
        "number": "+4911",
        "status": "active",
        "message_count": 7,
        "sent": 4,
        "delivered": 3,
        "failed": 1,
        "received": 2,
    }

    assert body["queue"] == {"queued": 1, "scheduled": 1, "sending": 1, "awaiting_report": 1, "depth": 3}
    rate = body["delivery_rate"]
    assert (rate["delivered"], rate["failed"], rate["expired"], rate["awaiting_report"]) == (4, 1, 1, 1)
    assert rate["rate"] == round(4 / 6, 4)

    assert body["memory"] == {
        "total": 8_000_000_000,
        "used": 2_000_000_000,
        "free": 5_000_000_000,
        "percent": 25.0,
        "available": 6_000_000_000,
    }
    assert body["cpu"]["percent"] == 12.5 and body["cpu"]["load1"] == 0.5
    assert body["disk"]["percent"] == 40.0
    assert body["temperature"] == 51.2
    assert body["uptime"]["seconds"] == 3600
    assert body["host"]["source"] == "stats-collector" and body["host"]["stale"] is False
    assert body["components"] == [
        {
            "name": "api-7",
            "memory_usage": 80_000_000,
            "percentage": 1.0,
            "cpu_percent": 1.5,
            "last_updated": NOW.isoformat(),
        }
    ]
    assert body["database"]["size_bytes"] > 0 and body["database"]["name"] == make_url(database_url).database

    usb0, usb1 = body["modems"]
    assert usb0 == {
        "id": "usb0",
        "online": True,
        "signal_dbm": -71,
        "signal_quality": 21,
        "registration": "home",
        "operator": "Telekom",
        "last_seen_at": (NOW - timedelta(seconds=10)).isoformat(),
        "last_error": None,
        "sim_card_id": 1,
        "number": "+4911",
    }
    assert usb1["online"] is False and usb1["last_error"] == "unplugged" and usb1["sim_card_id"] is None
    assert "series" not in body


def test_without_a_collector_sample_the_api_measures_the_host_itself(client, vera_key, clean):
    body = get(client, vera_key).get_json()
    assert body["host"]["source"] == "api"
    assert body["memory"]["total"] > 0
    assert [c["name"] for c in body["components"]][0].startswith("api-")
    assert body["messages"]["total_messages"] == 0
    assert body["sim_cards"]["most_used_sim"] == {"number": "N/A", "message_count": 0}
    assert body["delivery_rate"]["rate"] is None


def test_days_are_bucketed_in_the_requested_time_zone(client, vera_key, clean):
    # 30 minutes before today's UTC midnight: yesterday in UTC, already today in Kolkata (UTC+05:30).
    ts = datetime.combine(NOW.date(), datetime.min.time(), UTC) - timedelta(minutes=30)
    with Session(clean) as s:
        s.add(SimCard(id=1, number="+4911", status="active"))
        s.flush()
        s.add(outbound(1, "delivered", ts=ts))
        s.commit()
    zone = ZoneInfo("Asia/Kolkata")

    utc_days = {d["date"]: d["count"] for d in get(client, vera_key).get_json()["messages"]["messages_per_day"]}
    body = get(client, vera_key, tz="Asia/Kolkata").get_json()
    local_days = {d["date"]: d["count"] for d in body["messages"]["messages_per_day"]}

    assert utc_days.get(ts.date().isoformat()) == 1
    assert local_days.get(ts.astimezone(zone).date().isoformat()) == 1
    assert ts.astimezone(zone).date() != ts.date()
    assert body["messages"]["timezone"] == "Asia/Kolkata"
    assert body["generated_at"].endswith("+05:30")


def test_a_window_adds_host_and_message_series(client, vera_key, known_set):
    minute = NOW.replace(second=0, microsecond=0) - timedelta(minutes=30)
    with Session(known_set) as s:
        s.add_all(
            [
                StatSample(
                    source="host",
                    ts=minute + timedelta(seconds=10),
                    resolution=0,
                    data={"cpu": {"percent": 20.0}, "memory": {"percent": 50.0}},
                ),
                StatSample(
                    source="host",
                    ts=minute + timedelta(seconds=20),
                    resolution=0,
                    data={"cpu": {"percent": 40.0}, "memory": {"percent": 70.0}},
                ),
                # A coarser row for the same minute must not override the raw figures.
                StatSample(
                    source="host",
                    ts=minute,
                    resolution=300,
                    data={
                        "cpu": {"percent": 99.0},
                        "memory": {"percent": 99.0},
                        "modems": {"usb0": {"online": False, "signal_dbm": -113}},
                    },
                ),
                StatSample(
                    source="host",
                    ts=minute + timedelta(seconds=30),
                    resolution=0,
                    data={"modems": {"usb0": {"online": True, "signal_dbm": -70}, "usb1": {"online": False}}},
                ),
                StatSample(
                    source="host",
                    ts=minute + timedelta(seconds=40),
                    resolution=0,
                    data={"modems": {"usb0": {"online": False, "signal_dbm": -80}}},
                ),
            ]
        )
        s.commit()

    series = get(client, vera_key, window="1h").get_json()["series"]
    assert series["window"] == "1h" and series["host_step_seconds"] == 60
    by_ts = {p["ts"]: p for p in series["host"]}
    point = by_ts[minute.isoformat()]
    assert (point["cpu_percent"], point["memory_percent"]) == (30.0, 60.0)
    assert series["modems"]["usb0"] == [{"ts": minute.isoformat(), "signal_dbm": -75.0, "online_ratio": 0.5}]
    assert series["modems"]["usb1"] == [{"ts": minute.isoformat(), "signal_dbm": None, "online_ratio": 0.0}]
    assert len(series["messages"]) == 12
    assert sum(p["outgoing"] for p in series["messages"]) == 10  # the 3-day-old one is outside
    assert sum(p["incoming"] for p in series["messages"]) == 2
    assert sum(p["delivered"] for p in series["messages"]) == 4

    week = get(client, vera_key, window="7d").get_json()["series"]
    assert week["messages_step"] == "day" and len(week["messages"]) == 7
    assert sum(p["outgoing"] for p in week["messages"]) == 11


def test_it_rejects_an_unknown_window_or_time_zone(client, vera_key, clean):
    response = get(client, vera_key, window="2w")
    assert response.status_code == ValidationError.status
    assert "1h" in response.get_json()["fields"]["window"]
    response = get(client, vera_key, tz="Mars/Olympus")
    assert response.status_code == ValidationError.status
    assert "Mars/Olympus" in response.get_json()["fields"]["tz"]


def test_repeated_requests_within_the_cache_time_share_one_answer(service_env, vera_key, known_set):
    from .conftest import _api_settings
    from .tests_stats_app import make

    app = make(_api_settings(service_env))
    app.config["SMSGW_STATISTICS_CACHE_SECONDS"] = 60
    client = app.test_client()
    first = get(client, vera_key).get_json()
    with Session(known_set) as s:
        s.add(outbound(1, "queued"))
        s.commit()
    assert get(client, vera_key).get_json()["messages"]["total_messages"] == first["messages"]["total_messages"]
    # Another window or zone is another answer.
    assert get(client, vera_key, tz="Europe/Berlin").get_json()["messages"]["total_messages"] == 14


def test_a_rolled_up_row_gives_the_share_of_time_a_modem_was_online(client, vera_key, known_set):
    hour = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    with Session(known_set) as s:
        # What the collector's hourly roll-up writes: merge() turned `online` into a ratio.
        s.add(
            StatSample(
                source="host",
                ts=hour,
                resolution=3600,
                data={"modems": {"usb0": {"online": 0.75, "signal_dbm": -71.0}}},
            )
        )
        s.commit()

    series = get(client, vera_key, window="7d").get_json()["series"]
    assert {"ts": hour.isoformat(), "signal_dbm": -71.0, "online_ratio": 0.75} in series["modems"]["usb0"]
