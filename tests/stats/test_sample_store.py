"""Samples are stored, rolled up and expired; every time here is explicit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from smsgw_stats.settings import Tier
from smsgw_stats.store import SampleStore, merge

BASE = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # on an hour boundary
TIERS = (Tier(0, 86400), Tier(300, 7 * 86400), Tier(3600, 90 * 86400))


def raw(cpu: float, mem_total: int = 1000, uptime: int = 0) -> dict:
    return {
        "cpu": {"percent": cpu, "per_core": [cpu, cpu * 2]},
        "memory": {"total": mem_total, "percent": 50.0},
        "uptime": {"seconds": uptime},
    }


def rows(engine, resolution: int):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT ts, data FROM stat_samples WHERE resolution = :r ORDER BY ts"), {"r": resolution}
        ).all()


def test_it_stores_a_batch_of_samples_in_one_go(clean, database_url):
    store = SampleStore(database_url, TIERS)
    store.insert("host", [(BASE, raw(1.0)), (BASE + timedelta(seconds=10), raw(2.0))])
    stored = rows(clean, 0)
    assert [r.ts for r in stored] == [BASE, BASE + timedelta(seconds=10)]
    assert stored[1].data["cpu"]["percent"] == 2.0


def test_it_rolls_raw_samples_up_into_five_minute_averages(clean, database_url):
    store = SampleStore(database_url, TIERS)
    # 30 samples in [12:00, 12:05) and 3 in the bucket that is still open.
    samples = [(BASE + timedelta(seconds=10 * i), raw(float(i), uptime=i)) for i in range(33)]
    store.insert("host", samples)

    store.maintain(now=BASE + timedelta(seconds=331))

    five = rows(clean, 300)
    assert [r.ts for r in five] == [BASE]
    data = five[0].data
    assert data["n"] == 30
    assert data["cpu"]["percent"] == 14.5  # mean of 0..29
    assert data["cpu"]["per_core"] == [14.5, 29.0]
    assert data["memory"]["total"] == 1000
    assert data["uptime"]["seconds"] == 29  # a counter keeps its last value, not the mean


def test_it_does_not_count_a_sample_twice_when_maintenance_runs_again(clean, database_url):
    store = SampleStore(database_url, TIERS)
    store.insert("host", [(BASE + timedelta(seconds=10 * i), raw(10.0)) for i in range(60)])
    now = BASE + timedelta(minutes=10)
    store.maintain(now)
    store.maintain(now)
    store.maintain(now + timedelta(seconds=1))
    assert [r.ts for r in rows(clean, 300)] == [BASE, BASE + timedelta(minutes=5)]


def test_it_rolls_five_minute_rows_up_into_hours_weighted_by_sample_count(clean, database_url):
    store = SampleStore(database_url, TIERS)
    # Two 5-minute rows standing for 30 and 10 raw samples.
    store.insert(
        "host", [(BASE, {**raw(10.0), "n": 30}), (BASE + timedelta(minutes=5), {**raw(50.0), "n": 10})], resolution=300
    )

    store.maintain(now=BASE + timedelta(hours=1, seconds=5))

    hourly = rows(clean, 3600)
    assert [r.ts for r in hourly] == [BASE]
    assert hourly[0].data["n"] == 40
    assert hourly[0].data["cpu"]["percent"] == 20.0  # (10*30 + 50*10) / 40


def test_it_expires_each_tier_after_its_retention(clean, database_url):
    tiers = (Tier(0, 3600), Tier(300, 86400), Tier(3600, 7 * 86400))
    store = SampleStore(database_url, tiers)
    now = BASE + timedelta(days=10)
    store.insert("host", [(now - timedelta(hours=2), raw(1.0)), (now - timedelta(minutes=30), raw(2.0))])
    store.insert("host", [(now - timedelta(days=2), raw(3.0)), (now - timedelta(hours=3), raw(4.0))], resolution=300)
    store.insert("host", [(now - timedelta(days=8), raw(5.0)), (now - timedelta(days=2), raw(6.0))], resolution=3600)

    result = store.maintain(now)

    assert result["expired"] == {0: 1, 300: 1, 3600: 1}
    assert [r.data["cpu"]["percent"] for r in rows(clean, 0)] == [2.0]
    # The expired raw sample was rolled up before it went.
    assert [r.data["cpu"]["percent"] for r in rows(clean, 300)] == [4.0, 1.0, 2.0]
    assert [r.ts for r in rows(clean, 3600)][0] == now - timedelta(days=2)


def test_a_rolled_up_sample_survives_its_raw_samples(clean, database_url):
    store = SampleStore(database_url, TIERS)
    store.insert("host", [(BASE + timedelta(seconds=10 * i), raw(7.0)) for i in range(30)])
    store.maintain(now=BASE + timedelta(days=2))
    assert rows(clean, 0) == []
    assert [r.data["cpu"]["percent"] for r in rows(clean, 300)] == [7.0]


def test_merge_averages_only_over_samples_that_have_a_figure():
    merged = merge(
        [
            ({"temperature": {"celsius": 40.0}, "net": {"rx_bps": 10}}, 1),
            ({"net": {"rx_bps": 30}}, 1),
            ({"temperature": {"celsius": 50.0}, "net": {"rx_bps": None}}, 2),
        ]
    )
    assert merged["temperature"]["celsius"] == round((40 + 100) / 3, 3)
    assert merged["net"]["rx_bps"] == 20.0


def test_merge_keeps_the_last_value_of_strings_and_counters():
    merged = merge(
        [
            ({"disk": {"path": "/a", "total": 10, "percent": 10.0}, "flag": True}, 1),
            ({"disk": {"path": "/b", "total": 12, "percent": 20.0}, "flag": False}, 1),
        ]
    )
    assert merged["disk"] == {"path": "/b", "total": 12, "percent": 15.0}
    assert merged["flag"] == 0.5  # the share of the time it was true


def test_merge_turns_a_modems_online_flag_into_its_uptime_ratio():
    raw = [({"modems": {"m1": {"online": online}}}, 1) for online in (True, False, True, True)]
    five_minutes = merge(raw)
    assert five_minutes["modems"]["m1"]["online"] == 0.75
    # A second roll-up (5-minute rows into an hour) weighs the ratios by their samples.
    hour = merge([(five_minutes, 4), ({"modems": {"m1": {"online": False}}}, 4)])
    assert hour["modems"]["m1"]["online"] == 0.375


def test_merge_averages_components_that_come_and_go():
    merged = merge(
        [
            ({"components": {"api-1": {"rss_bytes": 100}}}, 1),
            ({"components": {"api-1": {"rss_bytes": 300}, "worker": {"rss_bytes": 50}}}, 1),
        ]
    )
    assert merged["components"] == {"api-1": {"rss_bytes": 200.0}, "worker": {"rss_bytes": 50.0}}


def test_a_long_backlog_is_rolled_up_in_slices_with_nothing_lost(clean, database_url):
    store = SampleStore(database_url, TIERS)
    # 20 hours of one sample a minute: more than two slices of 72 five-minute buckets.
    store.insert("host", [(BASE + timedelta(minutes=i), raw(float(i % 5))) for i in range(20 * 60)])
    store.maintain(now=BASE + timedelta(hours=20))
    five = rows(clean, 300)
    assert len(five) == 20 * 12
    assert all(r.data["n"] == 5 and r.data["cpu"]["percent"] == 2.0 for r in five)
    hourly = rows(clean, 3600)
    assert len(hourly) == 20 and all(r.data["n"] == 60 for r in hourly)
