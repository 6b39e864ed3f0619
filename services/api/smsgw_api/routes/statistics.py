# Over 500 lines on purpose: one route whose seed-shaped figures, time series and their SQL only make sense together.
"""GET /api/statistics: the seed's figures plus host, modems, queue and time series.

Seed keys are kept as they were (`memory`, `components`, `database`,
`messages` with `total_messages`/`messages_per_day`, `sim_cards` with
`most_used_sim(s)`); the rest is added alongside. Host figures come from the
stats collector's latest sample in `stat_samples`; when there is none (no
collector running) the API measures what it can see itself and says so in
`host.source`.

Times are stored in UTC and returned as ISO 8601 with an offset. Per-day
buckets are UTC days unless `?tz=Europe/Berlin` (any IANA name) is given;
the output times are then in that zone too.
"""

from __future__ import annotations

import os
import threading
import time as _time
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psutil
from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import DataError

from smsgw_api.core.errors import ValidationError
from smsgw_api.core.extensions import db
from smsgw_api.core.openapi import OBJ, STR, array, ok, register
from smsgw_api.core.security import require_role
from smsgw_api.core.web import query
from smsgw_api.domain.requests import StatisticsQuery
from smsgw_common.models import FINAL_STATES
from smsgw_common.settings import env_float

bp = Blueprint("statistics", __name__)

HOST_SOURCE = "host"
# A collector sample older than this is reported but flagged stale.
STALE_AFTER = 120
# window -> (seconds, host series step, message series step or "day")
WINDOWS = {
    "1h": (3600, 60, 300),
    "24h": (86400, 600, 3600),
    "7d": (7 * 86400, 3600, "day"),
    "30d": (30 * 86400, 14400, "day"),
}
_CACHE_KEY = "smsgw_statistics_cache"
UNSUCCESSFUL = tuple(s for s in FINAL_STATES if s not in ("delivered", "cancelled"))


def _zone(raw: str | None):
    if raw in (None, ""):
        return UTC
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError({"tz": f"{raw!r} is not a known IANA time zone, e.g. Europe/Berlin or UTC"}) from None


def _iso(value: datetime | None, zone) -> str | None:
    return value.astimezone(zone).isoformat() if value is not None else None


def _rows(sql: str, **params):
    return db.session.execute(text(sql), params).all()


# --- host ---------------------------------------------------------------------


def _latest_host_sample() -> tuple[datetime, dict] | None:
    row = db.session.execute(
        text("SELECT ts, data FROM stat_samples WHERE source = :s AND resolution = 0 ORDER BY ts DESC LIMIT 1"),
        {"s": HOST_SOURCE},
    ).first()
    return (row.ts, row.data) if row else None


def _own_view() -> dict:
    """What the API process can measure itself when no collector sample exists."""
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage("/")
    boot = psutil.boot_time()
    load1, load5, load15 = os.getloadavg()
    per_core = psutil.cpu_percent(percpu=True)
    proc = psutil.Process()
    return {
        "cpu": {
            "percent": round(sum(per_core) / len(per_core), 2),
            "per_core": per_core,
            "count": len(per_core),
            "load1": round(load1, 2),
            "load5": round(load5, 2),
            "load15": round(load15, 2),
        },
        "memory": {
            "total": mem.total,
            "available": mem.available,
            "used": mem.total - mem.available,
            "free": mem.free,
            "percent": mem.percent,
        },
        "disk": {"path": "/", "total": disk.total, "used": disk.used, "free": disk.free, "percent": disk.percent},
        "uptime": {"boot_time": int(boot), "seconds": int(_time.time() - boot)},
        "components": {
            f"api-{os.getpid()}": {"rss_bytes": proc.memory_info().rss, "ts": datetime.now(UTC).isoformat()}
        },
    }


def _host(now: datetime, zone) -> tuple[dict, dict]:
    sample = _latest_host_sample()
    if sample is not None:
        ts, data = sample
        meta = {
            "source": "stats-collector",
            "sampled_at": _iso(ts, zone),
            "stale": (now - ts).total_seconds() > STALE_AFTER,
        }
    else:
        data = _own_view()
        meta = {"source": "api", "sampled_at": _iso(now, zone), "stale": False}
    return meta, data


def _components(data: dict, zone) -> list[dict]:
    total = (data.get("memory") or {}).get("total") or 0
    out = []
    for name, figures in sorted((data.get("components") or {}).items()):
        rss = figures.get("rss_bytes") or 0
        ts = figures.get("ts")
        out.append(
            {
                "name": name,
                "memory_usage": rss,
                "percentage": round(100.0 * rss / total, 2) if total else None,
                "cpu_percent": figures.get("cpu_percent"),
                "last_updated": _iso(datetime.fromisoformat(ts), zone) if ts else None,
            }
        )
    return out


# --- database -----------------------------------------------------------------


def _database(now: datetime, zone) -> dict:
    name, size = db.session.execute(text("SELECT current_database(), pg_database_size(current_database())")).one()
    return {
        "name": name,
        "size_bytes": size,
        "size_mb": round(size / (1024 * 1024), 2),
        "last_updated": _iso(now, zone),
    }


# --- messages -------------------------------------------------------------------


def _days(now: datetime, zone, count: int) -> tuple[list[date], datetime]:
    today = now.astimezone(zone).date()
    days = [today - timedelta(days=i) for i in range(count - 1, -1, -1)]
    return days, datetime.combine(days[0], time(0), zone)


def _counts() -> list:
    """(sim_card_id, direction, status, n): one scan of `messages` feeds both
    the message totals and the per-SIM figures."""
    return _rows("SELECT sim_card_id, direction, status, count(*) FROM messages GROUP BY 1, 2, 3")


def _messages(now: datetime, zone, day_count: int, counts: list) -> dict:
    by_status: dict[str, int] = {}
    incoming = outgoing = 0
    for _, direction, status, n in counts:
        by_status[status] = by_status.get(status, 0) + n
        if direction == "inbound":
            incoming += n
        else:
            outgoing += n
    days, since = _days(now, zone, day_count)
    tz_name = getattr(zone, "key", "UTC")
    per_day = {d: {"date": d.isoformat(), "count": 0, "incoming": 0, "outgoing": 0} for d in days}
    for day, direction, n in _rows(
        "SELECT (timestamp AT TIME ZONE :tz)::date, direction, count(*) FROM messages "
        "WHERE timestamp >= :since GROUP BY 1, 2",
        tz=tz_name,
        since=since,
    ):
        if day in per_day:
            per_day[day]["count"] += n
            per_day[day]["incoming" if direction == "inbound" else "outgoing"] += n
    today = per_day[days[-1]]["count"]
    total = incoming + outgoing
    return {
        "total_messages": total,
        "incoming_messages": incoming,
        "outgoing_messages": outgoing,
        "messages_today": today,
        "messages_per_day": list(per_day.values()),
        "total": total,
        "incoming": incoming,
        "outgoing": outgoing,
        "today": today,
        "by_status": by_status,
        "timezone": tz_name,
    }


def _sim_cards(counts: list) -> dict:
    per_sim = {
        sim_id: {
            "id": sim_id,
            "number": number,
            "status": status,
            "message_count": 0,
            "sent": 0,
            "delivered": 0,
            "failed": 0,
            "received": 0,
        }
        for sim_id, number, status in _rows("SELECT id, number, status FROM sim_cards")
    }
    for sim_id, direction, state, n in counts:
        entry = per_sim.get(sim_id)
        if entry is None:
            continue
        entry["message_count"] += n
        if direction == "inbound":
            entry["received"] += n
        else:
            if state in ("sent", "delivered"):
                entry["sent"] += n
            if state in ("delivered", "failed"):
                entry[state] += n
    ranked = sorted(per_sim.values(), key=lambda e: (-e["message_count"], e["id"]))
    most_used = [
        {"id": e["id"], "number": e["number"], "message_count": e["message_count"]}
        for e in ranked
        if e["message_count"] > 0
    ][:5]
    active = sum(1 for e in per_sim.values() if e["status"] == "active")
    return {
        "total_sims": len(per_sim),
        "active_sims": active,
        "inactive_sims": len(per_sim) - active,
        "most_used_sim": most_used[0] if most_used else {"number": "N/A", "message_count": 0},
        "most_used_sims": most_used,
        "by_sim": sorted(per_sim.values(), key=lambda e: e["id"]),
    }


def _modems(zone) -> list[dict]:
    return [
        {
            "id": r.id,
            "online": r.online,
            "signal_dbm": r.signal_rssi,
            "signal_quality": r.signal_quality,
            "registration": r.registration,
            "operator": r.operator,
            "last_seen_at": _iso(r.last_seen_at, zone),
            "last_error": r.last_error,
            "sim_card_id": r.sim_id,
            "number": r.number,
        }
        for r in _rows(
            "SELECT m.id, m.online, m.signal_rssi, m.signal_quality, m.registration, m.operator, "
            "m.last_seen_at, m.last_error, s.id AS sim_id, s.number "
            "FROM modems m LEFT JOIN LATERAL (SELECT id, number FROM sim_cards WHERE modem_id = m.id "
            "ORDER BY last_seen_at DESC NULLS LAST LIMIT 1) s ON true ORDER BY m.id"
        )
    ]


def _queue(now: datetime) -> dict:
    out = {"queued": 0, "scheduled": 0, "sending": 0, "awaiting_report": 0}
    for status, n, later in _rows(
        "SELECT status, count(*), count(*) FILTER (WHERE send_at > :now) FROM messages "
        "WHERE direction = 'outbound' AND status IN ('queued', 'sending', 'sent') GROUP BY 1",
        now=now,
    ):
        if status == "queued":
            out["queued"], out["scheduled"] = n - later, later
        elif status == "sending":
            out["sending"] = n
        else:
            out["awaiting_report"] = n
    out["depth"] = out["queued"] + out["scheduled"] + out["sending"]
    return out


def _delivery_rate(now: datetime, zone, window: str) -> dict:
    since = now - timedelta(seconds=WINDOWS[window][0])
    counts = dict(
        _rows(
            "SELECT status, count(*) FROM messages WHERE direction = 'outbound' AND timestamp >= :since GROUP BY 1",
            since=since,
        )
    )
    delivered = counts.get("delivered", 0)
    unsuccessful = {s: counts.get(s, 0) for s in UNSUCCESSFUL}
    decided = delivered + sum(unsuccessful.values())
    return {
        "window": window,
        "since": _iso(since, zone),
        "delivered": delivered,
        **unsuccessful,
        "awaiting_report": counts.get("sent", 0),
        # Messages still on their way are left out: they are neither success nor failure yet.
        "rate": round(delivered / decided, 4) if decided else None,
    }


# --- series -----------------------------------------------------------------------


def _host_series(now: datetime, zone, seconds: int, step: int) -> list[dict]:
    rows = _rows(
        """
        SELECT DISTINCT ON (bucket) bucket, cpu, mem, load1, temp, disk, rx, tx FROM (
            SELECT to_timestamp(floor(extract(epoch FROM ts) / :step) * :step) AS bucket, resolution,
                   avg((data->'cpu'->>'percent')::float8) AS cpu,
                   avg((data->'memory'->>'percent')::float8) AS mem,
                   avg((data->'cpu'->>'load1')::float8) AS load1,
                   avg((data->'temperature'->>'celsius')::float8) AS temp,
                   avg((data->'disk'->>'percent')::float8) AS disk,
                   avg((data->'net'->>'rx_bps')::float8) AS rx,
                   avg((data->'net'->>'tx_bps')::float8) AS tx
            FROM stat_samples WHERE source = :source AND ts >= :since AND ts <= :now
            GROUP BY 1, 2
        ) b ORDER BY bucket, resolution
        """,
        step=step,
        source=HOST_SOURCE,
        since=now - timedelta(seconds=seconds),
        now=now,
    )

    def r(v, digits=2):
        return None if v is None else round(v, digits)

    return [
        {
            "ts": _iso(row.bucket, zone),
            "cpu_percent": r(row.cpu),
            "memory_percent": r(row.mem),
            "load1": r(row.load1),
            "temperature_celsius": r(row.temp, 1),
            "disk_percent": r(row.disk),
            "net_rx_bps": r(row.rx),
            "net_tx_bps": r(row.tx),
        }
        for row in rows
    ]


def _modem_series(now: datetime, zone, seconds: int, step: int) -> dict[str, list[dict]]:
    """Signal and share of time online per modem, from the modem states the
    collector recorded in its samples."""
    rows = _rows(
        """
        SELECT DISTINCT ON (bucket, modem) bucket, modem, signal, online FROM (
            SELECT to_timestamp(floor(extract(epoch FROM s.ts) / :step) * :step) AS bucket, s.resolution,
                   m.key AS modem,
                   avg((m.value->>'signal_dbm')::float8) AS signal,
                   -- raw samples hold a boolean, rolled-up ones the share of time online
                   avg(CASE jsonb_typeof(m.value->'online')
                         WHEN 'boolean' THEN CASE WHEN (m.value->>'online')::boolean THEN 1.0 ELSE 0.0 END
                         WHEN 'number' THEN (m.value->>'online')::float8 END) AS online
            FROM stat_samples s,
                 jsonb_each(CASE WHEN jsonb_typeof(s.data->'modems') = 'object'
                                 THEN s.data->'modems' ELSE '{}'::jsonb END) m
            WHERE s.source = :source AND s.ts >= :since AND s.ts <= :now
            GROUP BY 1, 2, 3
        ) b ORDER BY bucket, modem, resolution
        """,
        step=step,
        source=HOST_SOURCE,
        since=now - timedelta(seconds=seconds),
        now=now,
    )
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row.modem, []).append(
            {
                "ts": _iso(row.bucket, zone),
                "signal_dbm": None if row.signal is None else round(row.signal, 1),
                "online_ratio": None if row.online is None else round(float(row.online), 3),
            }
        )
    return dict(sorted(out.items()))


def _message_series(now: datetime, zone, seconds: int, step) -> list[dict]:
    def empty():
        return {"outgoing": 0, "incoming": 0, "delivered": 0, "failed": 0}

    tz_name = getattr(zone, "key", "UTC")
    if step == "day":
        days, since = _days(now, zone, seconds // 86400)
        buckets = {d: empty() for d in days}
        rows = _rows(
            "SELECT (timestamp AT TIME ZONE :tz)::date, direction, status, count(*) FROM messages "
            "WHERE timestamp >= :since GROUP BY 1, 2, 3",
            tz=tz_name,
            since=since,
        )
        label = lambda d: d.isoformat()  # noqa: E731
    else:
        # Buckets start on a local wall-clock boundary, so hours are the zone's hours.
        local = now.astimezone(zone)
        floor = local.replace(second=0, microsecond=0) - timedelta(
            seconds=(local.hour * 3600 + local.minute * 60) % step
        )
        count = seconds // step
        # Step in absolute time (UTC): wall-clock arithmetic would skip or
        # repeat a bucket where daylight saving time changes.
        origin = floor.astimezone(UTC) - timedelta(seconds=step * (count - 1))
        buckets = {origin + timedelta(seconds=step * i): empty() for i in range(count)}
        rows = _rows(
            "SELECT date_bin(make_interval(secs => :step), timestamp, :origin), direction, status, count(*) "
            "FROM messages WHERE timestamp >= :origin GROUP BY 1, 2, 3",
            step=step,
            origin=origin,
        )
        label = lambda d: _iso(d, zone)  # noqa: E731
    for bucket, direction, status, n in rows:
        entry = buckets.get(bucket)
        if entry is None:
            continue
        entry["incoming" if direction == "inbound" else "outgoing"] += n
        if status in ("delivered", "failed"):
            entry[status] += n
    key = "date" if step == "day" else "ts"
    return [{key: label(b), **v} for b, v in buckets.items()]


def _series(now: datetime, zone, window: str) -> dict:
    seconds, host_step, msg_step = WINDOWS[window]
    return {
        "window": window,
        "from": _iso(now - timedelta(seconds=seconds), zone),
        "to": _iso(now, zone),
        "host_step_seconds": host_step,
        "messages_step": msg_step if msg_step == "day" else f"{msg_step}s",
        "host": _host_series(now, zone, seconds, host_step),
        "modems": _modem_series(now, zone, seconds, host_step),
        "messages": _message_series(now, zone, seconds, msg_step),
    }


# --- the route ------------------------------------------------------------------------


def build(now: datetime | None = None, window: str | None = None, zone=UTC) -> dict:
    now = now or datetime.now(UTC)
    meta, data = _host(now, zone)
    counts = _counts()
    memory = data.get("memory") or {}
    uptime = data.get("uptime") or {}
    boot = uptime.get("boot_time")
    out = {
        "memory": {k: memory.get(k) for k in ("total", "used", "free", "percent", "available")},
        "components": _components(data, zone),
        "database": _database(now, zone),
        "messages": _messages(now, zone, 30 if window == "30d" else 7, counts),
        "sim_cards": _sim_cards(counts),
        "cpu": data.get("cpu"),
        "disk": data.get("disk"),
        "temperature": (data.get("temperature") or {}).get("celsius"),
        "uptime": {
            "seconds": uptime.get("seconds"),
            "boot_time": _iso(datetime.fromtimestamp(boot, UTC), zone) if boot else None,
        },
        "swap": data.get("swap"),
        "network": data.get("net"),
        "host": meta,
        "modems": _modems(zone),
        "queue": _queue(now),
        "delivery_rate": _delivery_rate(now, zone, window or "24h"),
        "generated_at": _iso(now, zone),
    }
    if window:
        out["series"] = _series(now, zone, window)
    return out


@bp.get("/api/statistics")
@require_role("viewer")
def get_statistics():
    args = query(StatisticsQuery)
    window = args.window
    zone = _zone(args.tz)
    # Dashboards poll this; a few seconds of reuse turns N open tabs into one
    # set of queries (each scans `messages`: ~0.3 s at a million rows).
    cache = current_app.extensions[_CACHE_KEY]
    key = (window, getattr(zone, "key", "UTC"))
    ttl = current_app.config["SMSGW_STATISTICS_CACHE_SECONDS"]
    with cache["lock"]:
        hit = cache["entries"].get(key)
    if hit is not None and _time.monotonic() - hit[0] < ttl:
        return jsonify(hit[1])
    try:
        body = build(window=window, zone=zone)
    except DataError:
        # The only user input in these queries is the zone name: Python knew
        # it but this Postgres' time zone database does not.
        db.session.rollback()
        raise ValidationError({"tz": f"{key[1]!r} is not known to the database's time zone data"}) from None
    if ttl > 0:
        with cache["lock"]:
            cache["entries"][key] = (_time.monotonic(), body)
    return jsonify(body)


register(
    "/api/statistics",
    "GET",
    {
        "summary": "System, message, SIM and modem statistics (seed shape plus host, queue and series)",
        "tags": ["statistics"],
        "responses": {
            "200": ok(
                {
                    "memory": OBJ,
                    "components": array(OBJ),
                    "database": OBJ,
                    "messages": OBJ,
                    "sim_cards": OBJ,
                    "host": OBJ,
                    "modems": array(OBJ),
                    "queue": OBJ,
                    "delivery_rate": OBJ,
                    "generated_at": STR,
                    "series": OBJ,
                },
                required=["memory", "components", "database", "messages", "sim_cards", "generated_at"],
            )
        },
    },
    query=StatisticsQuery,
)


def init_app(app: Flask) -> None:
    app.config.setdefault("SMSGW_STATISTICS_CACHE_SECONDS", env_float("STATISTICS_CACHE_SECONDS", 5.0))
    app.extensions[_CACHE_KEY] = {"lock": threading.Lock(), "entries": {}}
    app.register_blueprint(bp)
