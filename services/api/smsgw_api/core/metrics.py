"""Prometheus plumbing for the API (the /metrics view is routes/metrics.py).

- `smsgw_http_requests_total{method,route,status}` and
  `smsgw_http_request_duration_seconds{method,route}`, counted in Flask
  before/after-request hooks. `route` is the URL rule (`/api/sms/<int:message_id>`),
  never the raw path, so label cardinality stays bounded.
- Gauges read from Postgres at scrape time, cached METRICS_CACHE_SECONDS
  (default 5): messages by state and direction, queue depth, per-SIM
  sent/delivered/failed, modem online and signal.
- Read from this process's pipeline at scrape time: `smsgw_pipeline_leader`
  (1 if this process leads) and `smsgw_pipeline_loop_age_seconds{loop}`
  (seconds since each loop last completed a round; -1: never, or its thread died).

/metrics has no authentication: it is meant for the internal network only
(nginx does not proxy it; see docs/observability.md).

gunicorn runs several worker processes and each would count only its own
requests. With PROMETHEUS_MULTIPROC_DIR set (an empty directory, before the
workers start) the request metrics are shared through files there and summed
at scrape time. `gunicorn_conf.on_starting` sets one up whenever there is more
than one worker; without it, /metrics would show the scraped worker's counts.

Each API process also reports its own RSS/CPU on `smsgw/stats/api-<host>-<pid>`
(smsgw_common.selfstats) every SELFSTATS_INTERVAL seconds (default 30, 0 = off),
started with the first request so that it runs in the gunicorn worker, not in
a master that forks.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time

from flask import Flask, current_app, g, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import text

from smsgw_api.core.extensions import bus, db
from smsgw_api.core.liveness import pipeline_status
from smsgw_common import selfstats
from smsgw_common.settings import env_float

log = logging.getLogger(__name__)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REGISTRY_KEY = "smsgw_metrics_registry"

# Process-wide: one gunicorn worker serves one app. registry=None, so that
# several apps in one process (tests) can each expose them without clashing.
REQUESTS = Counter(
    "smsgw_http_requests",
    "HTTP requests handled, by route template and status.",
    ["method", "route", "status"],
    registry=None,
)
LATENCY = Histogram(
    "smsgw_http_request_duration_seconds",
    "Time to handle an HTTP request, by route template.",
    ["method", "route"],
    buckets=BUCKETS,
    registry=None,
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _AppPublisher:
    """What selfstats needs from a Bus, through the app's lazily started one."""

    def __init__(self, app: Flask):
        self.app = app

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        return bus.get(self.app).publish(topic, payload, qos=qos, retain=retain)


def _selfstats_source() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:32] or "host"
    return f"api-{host}-{os.getpid()}"


def _start_selfstats(app: Flask) -> None:
    interval = env_float("SELFSTATS_INTERVAL", 30.0)
    if interval <= 0 or app.testing:
        return
    started_in: list[int] = []

    @app.before_request
    def _ensure_selfstats():
        if started_in != [os.getpid()]:
            started_in[:] = [os.getpid()]
            app.extensions["smsgw_selfstats"] = selfstats.start(
                _AppPublisher(app), bus.state(app).topics, _selfstats_source(), interval
            )


class DatabaseCollector:
    """Gauges from Postgres, computed on scrape and cached for `ttl` seconds so
    that several scrapers (or a fast one) cost one set of queries."""

    def __init__(self, app: Flask, ttl: float):
        self.app = app
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list] | None = None

    def collect(self):
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.ttl:
                self._cached = (time.monotonic(), self._query())
            families = self._cached[1]
        yield from families

    def _query(self) -> list:
        up = GaugeMetricFamily("smsgw_database_up", "1 if the API could query Postgres for these metrics.")
        try:
            with db.state(self.app).engine.connect() as conn:
                conn.execute(text("SET LOCAL statement_timeout = 2000"))
                families = self._families(conn)
        except Exception as exc:
            log.warning("metrics: database query failed: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    @staticmethod
    def _families(conn) -> list:
        messages = GaugeMetricFamily(
            "smsgw_messages", "Messages in the database by state and direction.", labels=["state", "direction"]
        )
        for direction, state, n in conn.execute(text("SELECT direction, status, count(*) FROM messages GROUP BY 1, 2")):
            messages.add_metric([state, direction], n)

        due, scheduled, sending = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE status = 'queued' AND (send_at IS NULL OR send_at <= now())), "
                "count(*) FILTER (WHERE status = 'queued' AND send_at > now()), "
                "count(*) FILTER (WHERE status = 'sending') "
                "FROM messages WHERE status IN ('queued', 'sending')"
            )
        ).one()
        depth = GaugeMetricFamily("smsgw_queue_depth", "Outbound messages queued and due now (not yet claimed).")
        depth.add_metric([], due)
        sched = GaugeMetricFamily(
            "smsgw_queue_scheduled", "Queued messages scheduled for later (send_at in the future)."
        )
        sched.add_metric([], scheduled)
        in_flight = GaugeMetricFamily("smsgw_queue_sending", "Messages claimed by a worker and being sent.")
        in_flight.add_metric([], sending)

        per_sim = CounterMetricFamily(
            "smsgw_sim_messages",
            "Outbound messages per SIM: sent (reached the network), delivered, failed.",
            labels=["sim", "state"],
        )
        info = GaugeMetricFamily(
            "smsgw_sim_info", "A SIM card's number and status (value is always 1).", labels=["sim", "number", "status"]
        )
        for sim_id, number, status in conn.execute(text("SELECT id, number, status FROM sim_cards ORDER BY id")):
            info.add_metric([str(sim_id), number or "", status], 1)
        for sim_id, sent, delivered, failed in conn.execute(
            text(
                "SELECT sim_card_id, "
                "count(*) FILTER (WHERE sent_at IS NOT NULL OR status IN ('sent', 'delivered')), "
                "count(*) FILTER (WHERE status = 'delivered'), count(*) FILTER (WHERE status = 'failed') "
                "FROM messages WHERE direction = 'outbound' AND sim_card_id IS NOT NULL GROUP BY 1 ORDER BY 1"
            )
        ):
            per_sim.add_metric([str(sim_id), "sent"], sent)
            per_sim.add_metric([str(sim_id), "delivered"], delivered)
            per_sim.add_metric([str(sim_id), "failed"], failed)

        online = GaugeMetricFamily("smsgw_modem_online", "1 if the modem's worker reports it online.", labels=["modem"])
        signal = GaugeMetricFamily("smsgw_modem_signal_dbm", "Last reported signal strength.", labels=["modem"])
        seen = GaugeMetricFamily(
            "smsgw_modem_last_seen_timestamp_seconds", "When the modem last reported.", labels=["modem"]
        )
        for modem_id, is_online, dbm, last_seen in conn.execute(
            text("SELECT id, online, signal_rssi, last_seen_at FROM modems ORDER BY id")
        ):
            online.add_metric([modem_id], 1 if is_online else 0)
            if dbm is not None:
                signal.add_metric([modem_id], dbm)
            if last_seen is not None:
                seen.add_metric([modem_id], last_seen.timestamp())
        return [messages, depth, sched, in_flight, per_sim, info, online, signal, seen]


def _route_label() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def _before():
    g._metrics_start = time.perf_counter()


def _after(response):
    start = g.pop("_metrics_start", None)
    if start is None:
        return response
    elapsed = time.perf_counter() - start
    method = request.method if request.method in METHODS else "OTHER"
    route = _route_label()
    REQUESTS.labels(method, route, str(response.status_code)).inc()
    LATENCY.labels(method, route).observe(elapsed)
    return response


class PipelineCollector:
    """This process's leadership and loop ages, read at scrape time."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        status = pipeline_status(self.app)
        if status is None:
            return
        leader = GaugeMetricFamily("smsgw_pipeline_leader", "1 if this process is the events leader.")
        leader.add_metric([], 1 if status.is_leader else 0)
        age = GaugeMetricFamily(
            "smsgw_pipeline_loop_age_seconds",
            "Seconds since a background loop last completed a round (-1: never, or dead).",
            labels=["loop"],
        )
        for loop in status.loops:
            age.add_metric([loop.name], loop.age_seconds if loop.alive and loop.age_seconds is not None else -1)
        yield leader
        yield age


def registry(app: Flask | None = None) -> CollectorRegistry:
    return (app or current_app).extensions[REGISTRY_KEY]


def init_app(app: Flask) -> None:
    reg = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(reg)
    else:
        reg.register(REQUESTS)
        reg.register(LATENCY)
    ttl = env_float("METRICS_CACHE_SECONDS", 5.0)
    reg.register(DatabaseCollector(app, ttl))
    reg.register(PipelineCollector(app))
    app.extensions[REGISTRY_KEY] = reg
    app.before_request(_before)
    app.after_request(_after)
    _start_selfstats(app)
