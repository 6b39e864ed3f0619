"""Services report their own RSS/CPU over MQTT; the collector keeps the latest."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from datetime import UTC

import pytest
from support.mqtt import wait_subscribed
from support.waits import wait_until

from smsgw_common import selfstats
from smsgw_common.mqtt import Bus
from smsgw_common.schemas import StatsReport, parse
from smsgw_common.settings import MqttSettings
from smsgw_common.topics import Topics
from smsgw_stats.components import ComponentTracker, ModemTracker

from .conftest import MQTT_HOST, MQTT_PORT


def mqtt(prefix: str) -> MqttSettings:
    return MqttSettings(host=MQTT_HOST, port=MQTT_PORT, username=None, password=None, prefix=prefix)


def wait_for(predicate, timeout: float = 5.0):
    return wait_until(predicate, timeout, 0.05, "the tracker to see the published figures")


def connected_bus(prefix: str, name: str) -> Bus:
    bus = Bus(mqtt(prefix), client_id=f"{name}-{os.getpid()}-{os.urandom(3).hex()}")
    bus.start()
    assert bus.wait_connected(5), "the test broker on 127.0.0.1:1883 is not reachable"
    return bus


@contextmanager
def collector_and_service(prefix: str):
    """A ComponentTracker fed by a collector's subscription to the stats
    topics, and a service's bus to publish on: (topics, tracker, service_bus)."""
    topics = Topics(prefix)
    tracker = ComponentTracker()
    collector_bus = connected_bus(prefix, "collector")
    try:
        collector_bus.subscribe(topics.all_stats(), tracker.handle, qos=0)
        service_bus = connected_bus(prefix, "service")
        try:
            wait_subscribed(collector_bus, service_bus, prefix)  # QoS 0 publishes before it are dropped
            yield topics, tracker, service_bus
        finally:
            service_bus.stop()
    finally:
        collector_bus.stop()


def test_it_keeps_the_latest_report_of_each_service_from_mqtt(mqtt_prefix):
    with collector_and_service(f"{mqtt_prefix}components-a/") as (topics, tracker, service_bus):
        reporter = selfstats.Reporter(service_bus, topics, "modem-worker-usb0", interval=60)
        reporter.report()
        reporter.publish_once()
        seen = wait_for(lambda: tracker.snapshot().get("modem-worker-usb0"))
        assert seen, "no stats report arrived over MQTT"
        assert seen["rss_bytes"] > 1_000_000
        assert seen["cpu_percent"] >= 0
        assert seen["cpu_seconds"] > 0


def test_it_drops_an_invalid_stats_payload_and_keeps_listening(mqtt_prefix):
    with collector_and_service(f"{mqtt_prefix}components-b/") as (topics, tracker, service_bus):
        service_bus.publish(topics.stats("broken"), b"{not json", qos=0)
        service_bus.publish(topics.stats("nosource"), b'{"rss_bytes": 5}', qos=0)
        selfstats.Reporter(service_bus, topics, "api-1", interval=60).publish_once()
        assert wait_for(lambda: "api-1" in tracker.snapshot())
        assert set(tracker.snapshot()) == {"api-1"}


def test_the_topic_names_the_source_whatever_the_payload_claims():
    tracker = ComponentTracker()
    payload = b'{"source": "api", "ts": "2026-01-01T00:00:00Z", "rss_bytes": 1}'
    tracker.handle("smsgw/stats/modem-worker-1", payload)
    assert set(tracker.snapshot()) == {"modem-worker-1"}


def test_it_forgets_a_service_that_stopped_reporting():
    now = [1000.0]
    tracker = ComponentTracker(ttl=300, clock=lambda: now[0])
    tracker.handle("smsgw/stats/api-111", b'{"source": "api-111", "ts": "2026-01-01T00:00:00Z", "rss_bytes": 1}')
    now[0] += 200
    tracker.handle("smsgw/stats/api-222", b'{"source": "api-222", "ts": "2026-01-01T00:03:20Z", "rss_bytes": 2}')
    assert set(tracker.snapshot()) == {"api-111", "api-222"}
    now[0] += 101
    assert set(tracker.snapshot()) == {"api-222"}


def test_selfstats_measures_cpu_between_two_reports():
    reporter = selfstats.Reporter(bus=None, topics=Topics("smsgw/"), source="api-1", interval=30)
    first = reporter.report()
    assert first.cpu_percent is None  # nothing to compare with yet
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:  # burn some CPU, bounded in time
        sum(range(1000))
    second = reporter.report()
    assert second.cpu_percent is not None and second.cpu_percent > 10
    assert second.rss_bytes is not None and second.rss_bytes > 1_000_000
    assert second.extra["pid"] == os.getpid()


def test_selfstats_refuses_a_source_that_is_not_a_topic_segment():
    with pytest.raises(ValueError, match="api/"):
        selfstats.Reporter(bus=None, topics=Topics("smsgw/"), source="api/+", interval=30)


def test_what_selfstats_sends_is_a_valid_stats_report_of_the_shared_schema():
    reporter = selfstats.Reporter(bus=None, topics=Topics("smsgw/"), source="api-1", interval=30)
    assert "cpu_percent" not in json.loads(reporter.report().to_json())  # no null on the wire
    payload = reporter.report().to_json()
    report = parse(StatsReport, payload)
    assert report is not None and report.source == "api-1" and report.cpu_percent is not None
    assert report.rss_bytes > 1_000_000


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2]",
        b'{"rss_bytes": 5}',
        b'{"source": "api", "ts": "yesterday"}',
        b'{"source": "api", "ts": "2026-01-01T00:00:00Z", "rss_bytes": "big"}',
        b'{"source": "api", "ts": "2026-01-01T00:00:00Z", "cpu_percent": "high"}',
        b'{"source": "api", "ts": "2026-01-01T00:00:00Z", "extra": []}',
        b'{"source": "api", "ts": "2026-01-01T00:00:00Z", "rss_bytes": -1}',
        b'{"source": "api", "ts": "2026-01-01T00:00:00Z", "rss_bytes": true}',
        b'{"source": "api", "ts": "2026-01-01T00:00:00"}',  # no offset: not comparable
        b'{"source": "", "ts": "2026-01-01T00:00:00Z"}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser goes
    ],
)
def test_the_collector_drops_what_the_shared_schema_rejects(payload, caplog):
    tracker = ComponentTracker()
    with caplog.at_level(logging.WARNING):
        tracker.handle("smsgw/stats/api", payload)
    assert tracker.snapshot() == {}
    assert "dropping invalid StatsReport payload" in caplog.text


def test_the_collector_keeps_a_report_built_with_the_shared_schema():
    from datetime import datetime

    report = StatsReport(
        source="modem-worker-1", ts=datetime.now(UTC), rss_bytes=123, cpu_percent=0.5, extra={"queue": 3}
    )
    tracker = ComponentTracker()
    tracker.handle("smsgw/stats/modem-worker-1", report.to_json())
    assert tracker.snapshot() == {"modem-worker-1": {"rss_bytes": 123, "cpu_percent": 0.5, "ts": report.ts.isoformat()}}


def test_it_keeps_each_modems_signal_and_registration_from_its_state_topic():
    tracker = ModemTracker(Topics("smsgw/"))
    tracker.handle(
        "smsgw/modems/usb0/state",
        b'{"modem_id": "usb0", "online": true, "ts": "2026-01-01T00:00:00Z",'
        b' "signal_dbm": -71, "registration": "home", "imsi": "262011234"}',
    )
    tracker.handle("smsgw/modems/usb1/state", b'{"modem_id": "usb1", "online": false, "reason": "lwt"}')
    tracker.handle("smsgw/modems/usb2/state", b'{"modem_id": "usb2", "online": "yes"}')  # invalid: dropped
    tracker.handle("smsgw/modems/usb3/state", b'{"online": true, "signal_dbm": "strong"}')  # bad field: left out
    assert tracker.snapshot() == {
        "usb0": {"online": True, "signal_dbm": -71, "registration": "home"},
        "usb1": {"online": False},
        "usb3": {"online": True},
    }
    tracker.handle("smsgw/modems/usb1/state", b"")  # a cleared retained state: the modem is gone
    assert set(tracker.snapshot()) == {"usb0", "usb3"}
