"""GET /metrics parses with Prometheus' own parser and carries the right figures."""

from __future__ import annotations

import os
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from smsgw_common.models import Message, Modem, SimCard

from .conftest import JWT_SECRET, _api_settings

NOW = datetime.now(UTC)


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def values(family, **match) -> dict:
    """{labels tuple: value} of a family's main samples, filtered by labels."""
    out = {}
    for s in family.samples:
        if s.name.endswith(("_created", "_bucket", "_sum", "_count")) and s.name != family.name:
            continue
        if all(s.labels.get(k) == v for k, v in match.items()):
            out[tuple(sorted(s.labels.items()))] = s.value
    return out


def request_count(families, route: str, status: str) -> float:
    family = families.get("smsgw_http_requests")
    if family is None:
        return 0.0
    return sum(
        s.value
        for s in family.samples
        if s.name == "smsgw_http_requests_total" and s.labels["route"] == route and s.labels["status"] == status
    )


def test_metrics_needs_no_credentials_and_parses(client, clean):
    families = scrape(client)
    assert families["smsgw_database_up"].samples[0].value == 1


def test_requests_are_counted_by_route_template_and_status(client, vera_key, clean):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/api/statistics", headers={"X-API-Key": vera_key}).status_code == 200
    assert client.get("/api/statistics").status_code == 401
    client.get("/no/such/path/123")
    after = scrape(client)

    assert request_count(after, "/api/statistics", "200") - request_count(before, "/api/statistics", "200") == 3
    assert request_count(after, "/api/statistics", "401") - request_count(before, "/api/statistics", "401") == 1
    # An unknown path is one label value, not one per path (bounded cardinality).
    assert request_count(after, "<unmatched>", "404") - request_count(before, "<unmatched>", "404") == 1
    latency = after["smsgw_http_request_duration_seconds"]
    assert latency.type == "histogram"
    counts = [
        s
        for s in latency.samples
        if s.name.endswith("_count") and s.labels == {"method": "GET", "route": "/api/statistics"}
    ]
    assert counts and counts[0].value >= 4


def test_database_gauges_show_messages_queue_sims_and_modems(client, clean):
    with Session(clean) as s:
        s.add_all([Modem(id="usb0", online=True, signal_rssi=-67, last_seen_at=NOW), Modem(id="usb1", online=False)])
        s.flush()
        s.add_all(
            [
                SimCard(id=1, number="+4911", status="active", modem_id="usb0"),
                SimCard(id=2, number="+4922", status="inactive"),
            ]
        )
        s.flush()

        def msg(status, sim=1, direction="outbound", **kw):
            return Message(
                direction=direction,
                recipient="+491",
                message="x",
                status=status,
                encoding="GSM-7",
                segments=1,
                sim_card_id=sim,
                **kw,
            )

        s.add_all(
            [
                msg("delivered", sent_at=NOW),
                msg("delivered", sent_at=NOW),
                msg("failed", sent_at=NOW),
                msg("failed"),
                msg("sent", sent_at=NOW),
                msg("queued"),
                msg("queued"),
                msg("queued", send_at=NOW + timedelta(hours=1)),
                msg("sending", sim=2),
                msg("received", direction="inbound"),
            ]
        )
        s.commit()

    f = scrape(client)
    messages = {(s.labels["state"], s.labels["direction"]): s.value for s in f["smsgw_messages"].samples}
    assert messages == {
        ("delivered", "outbound"): 2,
        ("failed", "outbound"): 2,
        ("sent", "outbound"): 1,
        ("queued", "outbound"): 3,
        ("sending", "outbound"): 1,
        ("received", "inbound"): 1,
    }
    assert f["smsgw_queue_depth"].samples[0].value == 2
    assert f["smsgw_queue_scheduled"].samples[0].value == 1
    assert f["smsgw_queue_sending"].samples[0].value == 1
    per_sim = {
        (s.labels["sim"], s.labels["state"]): s.value
        for s in f["smsgw_sim_messages"].samples
        if s.name == "smsgw_sim_messages_total"
    }
    assert per_sim[("1", "sent")] == 4  # every message that reached the network, whatever came after
    assert per_sim[("1", "delivered")] == 2
    assert per_sim[("1", "failed")] == 2
    info = {s.labels["sim"]: s.labels for s in f["smsgw_sim_info"].samples}
    assert info["2"]["number"] == "+4922" and info["2"]["status"] == "inactive"
    online = {s.labels["modem"]: s.value for s in f["smsgw_modem_online"].samples}
    assert online == {"usb0": 1, "usb1": 0}
    assert {s.labels["modem"]: s.value for s in f["smsgw_modem_signal_dbm"].samples} == {"usb0": -67}


def test_a_database_outage_shows_as_database_up_zero_not_an_error(service_env, python):
    # Its own process: the app must be built against an unreachable database.
    script = textwrap.dedent("""
        import os
        from prometheus_client.parser import text_string_to_metric_families
        from smsgw_api.core.settings import ApiSettings
        import tests_stats_app
        app = tests_stats_app.make(ApiSettings.from_env())
        body = app.test_client().get("/metrics").get_data(as_text=True)
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        print("UP", fams["smsgw_database_up"].samples[0].value)
    """)
    env = {
        **service_env,
        "DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:9/none",
        "JWT_SECRET": JWT_SECRET,
        "PYTHONPATH": os.path.dirname(__file__),
    }
    proc = subprocess.run([python, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "UP 0.0" in proc.stdout


def test_multiprocess_mode_sums_the_request_counts_of_all_workers(service_env, python, tmp_path):
    """gunicorn workers are separate processes; with PROMETHEUS_MULTIPROC_DIR a
    scrape served by one of them reports the requests of all."""
    worker = textwrap.dedent("""
        import sys
        from smsgw_api.core.settings import ApiSettings
        import tests_stats_app
        app = tests_stats_app.make(ApiSettings.from_env())
        client = app.test_client()
        for _ in range(int(sys.argv[1])):
            client.get("/no/such/path")
        if sys.argv[2] == "scrape":
            sys.stdout.write(client.get("/metrics").get_data(as_text=True))
    """)
    env = {
        **service_env,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "JWT_SECRET": JWT_SECRET,
        "PYTHONPATH": os.path.dirname(__file__),
    }
    first = subprocess.run([python, "-c", worker, "2", "quiet"], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([python, "-c", worker, "3", "scrape"], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    families = {f.name: f for f in text_string_to_metric_families(second.stdout)}
    assert request_count(families, "<unmatched>", "404") == 5


def test_each_api_process_reports_its_own_rss_and_cpu_over_mqtt(service_env, monkeypatch):
    from smsgw_api.core.extensions import bus
    from smsgw_common.topics import Topics
    from smsgw_stats.components import ComponentTracker

    from .test_components import connected_bus, wait_for
    from .tests_stats_app import make

    prefix = service_env["MQTT_PREFIX"] + "api-selfstats/"
    tracker = ComponentTracker()
    listener = connected_bus(prefix, "listener")
    listener.subscribe(Topics(prefix).all_stats(), tracker.handle, qos=0)
    monkeypatch.setenv("SELFSTATS_INTERVAL", "0.2")
    # Not a test app, but no leader/sweeper either: they would touch this tier's rows.
    app = make(_api_settings({**service_env, "MQTT_PREFIX": prefix, "PIPELINE_BACKGROUND": "off"}), testing=False)
    try:
        app.test_client().get("/healthz")
        source = f"-{os.getpid()}"
        # Reports repeat every 0.2 s; the wait only covers the app's broker
        # connection, which is slow when the machine is busy.
        reported = wait_for(
            lambda: [s for s in tracker.snapshot() if s.startswith("api-") and s.endswith(source)], timeout=20
        )
        assert reported, "the API process did not report its figures"
        assert tracker.snapshot()[reported[0]]["rss_bytes"] > 10_000_000
    finally:
        reporter = app.extensions.get("smsgw_selfstats")
        if reporter is not None:
            reporter.stop()
        bus.stop(app)
        listener.stop()


def test_every_request_leaves_one_json_access_line_with_its_request_id(client, vera_key, clean):
    import io
    import json
    import logging

    from smsgw_common.jsonlog import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("api"))
    access = logging.getLogger("smsgw_api.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        response = client.get("/api/statistics", headers={"X-API-Key": vera_key, "X-Request-ID": "trace-me-42"})
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    assert response.headers["X-Request-ID"] == "trace-me-42"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "trace-me-42"
    assert (line["route"], line["status"], line["http_method"]) == ("/api/statistics", 200, "GET")
    assert line["duration_ms"] > 0 and "message_id" not in line
