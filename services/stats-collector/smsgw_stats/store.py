"""Samples in Postgres (`stat_samples`), rolled up and expired by tier.

Raw samples (resolution 0) are averaged into 5-minute rows, those into hourly
rows; each tier is then trimmed to its retention. A rolled-up row keeps the
shape of a raw sample plus `n`, the number of raw samples it stands for, so
averaging averages stays correctly weighted. Only complete buckets are rolled
up, and every pass starts after the newest existing rollup, so a pass can run
any number of times without counting a sample twice (a raw sample written
after its bucket was rolled up is not counted; the collector flushes before
it maintains, so its own samples never are).

Plain psycopg2 rather than SQLAlchemy: the table is one the shared models
define (`smsgw_common.models.StatSample`), but SQLAlchemy's import alone
would cost the collector 15 MB of its 30 MB budget.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg2

from .settings import Tier

log = logging.getLogger(__name__)

# Counters and identities: the latest value is the meaningful one, not the mean.
LAST_KEYS = frozenset({"boot_time", "seconds", "rx_bytes", "tx_bytes", "cpu_seconds", "total", "count", "path", "ts"})
# Buckets rolled up per query (6 h of 5-minute rows, 3 days of hourly ones).
CHUNK_BUCKETS = 72
# Serialises maintenance between two collectors pointed at one database.
_LOCK_KEY = 0x5354_4154  # "STAT"


def libpq_url(url: str) -> str:
    """The settings give a SQLAlchemy URL; libpq wants it without the driver."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge(samples: list[tuple[dict, float]]) -> dict:
    """Weighted mean of the numeric leaves of (data, weight) pairs; a boolean
    becomes the share of the time it was true (a modem's `online` turns into
    its uptime ratio); keys in LAST_KEYS and other non-numbers take the last
    value; lists of equal length are averaged element by element. A key
    missing from some samples is averaged over the samples that have it."""
    out: dict = {}
    keys: dict = {}
    for data, _ in samples:
        keys.update(dict.fromkeys(data))
    for key in keys:
        present = [(d[key], w) for d, w in samples if d.get(key) is not None]
        if not present:
            out[key] = None
            continue
        last = present[-1][0]
        if isinstance(last, dict):
            out[key] = merge([(v, w) for v, w in present if isinstance(v, dict)])
        elif isinstance(last, list):
            same = [(v, w) for v, w in present if isinstance(v, list) and len(v) == len(last)]
            if key not in LAST_KEYS and all(_is_number(x) for v, _ in same for x in v):
                total = sum(w for _, w in same)
                out[key] = [round(sum(v[i] * w for v, w in same) / total, 2) for i in range(len(last))]
            else:
                out[key] = last
        elif key in LAST_KEYS or not (_is_number(last) or isinstance(last, bool)):
            out[key] = last
        else:
            # A ratio already merged once (a float) averages on with the booleans.
            numbers = [(float(v), w) for v, w in present if _is_number(v) or isinstance(v, bool)]
            total = sum(w for _, w in numbers)
            out[key] = round(sum(v * w for v, w in numbers) / total, 3)
    return out


def _insert(cur, rows: list[tuple[str, datetime, int, dict]]) -> None:
    # A multi-row VALUES list by hand: psycopg2.extras (execute_values, Json)
    # would add 1.2 MB of imports for the same statement.
    placeholders = ", ".join(["(%s, %s, %s, %s::jsonb)"] * len(rows))
    args = [arg for source, ts, res, data in rows for arg in (source, ts, res, json.dumps(data))]
    cur.execute(f"INSERT INTO stat_samples (source, ts, resolution, data) VALUES {placeholders}", args)


def bucket_start(ts: datetime, resolution: int) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % resolution, UTC)


class SampleStore:
    """One connection, opened on first use and reopened after an error."""

    def __init__(self, url: str, tiers: tuple[Tier, ...], connect_timeout: int = 5):
        self.url = libpq_url(url)
        self.tiers = tiers
        self.connect_timeout = connect_timeout
        self._conn = None

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(
                self.url, connect_timeout=self.connect_timeout, application_name="stats-collector"
            )
        return self._conn

    def _run(self, work):
        """Run `work(cursor)` in one transaction; drop the connection on failure
        so the next call starts afresh (Postgres may have restarted)."""
        conn = self._connection()
        try:
            with conn, conn.cursor() as cur:
                return work(cur)
        except psycopg2.Error:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None

    def insert(self, source: str, rows: list[tuple[datetime, dict]], resolution: int = 0) -> None:
        """One INSERT for the whole batch."""
        if rows:
            self._run(lambda cur: _insert(cur, [(source, ts, resolution, data) for ts, data in rows]))

    def maintain(self, now: datetime) -> dict:
        """Roll up complete buckets, then expire; returns counts per tier."""

        def work(cur):
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
            if not cur.fetchone()[0]:
                log.info("another collector is maintaining stat_samples; skipping this pass")
                return {"rolled_up": {}, "expired": {}}
            rolled = {dst.resolution: self._rollup(cur, src, dst, now) for src, dst in zip(self.tiers, self.tiers[1:])}
            expired = {}
            for tier in self.tiers:
                cur.execute(
                    "DELETE FROM stat_samples WHERE resolution = %s AND ts < %s",
                    (tier.resolution, now - timedelta(seconds=tier.retention)),
                )
                expired[tier.resolution] = cur.rowcount
            return {"rolled_up": rolled, "expired": expired}

        return self._run(work)

    @staticmethod
    def _rollup(cur, src: Tier, dst: Tier, now: datetime) -> int:
        res = dst.resolution
        end = bucket_start(now, res)
        created = 0
        cur.execute("SELECT DISTINCT source FROM stat_samples WHERE resolution = %s", (src.resolution,))
        for (source,) in cur.fetchall():
            cur.execute("SELECT max(ts) FROM stat_samples WHERE source = %s AND resolution = %s", (source, res))
            last = cur.fetchone()[0]
            if last is not None:
                start = last + timedelta(seconds=res)
            else:
                cur.execute(
                    "SELECT min(ts) FROM stat_samples WHERE source = %s AND resolution = %s", (source, src.resolution)
                )
                start = bucket_start(cur.fetchone()[0], res)
            # A bounded slice at a time: after a long stretch without
            # maintenance, a day of raw samples must not sit in memory at once.
            while start < end:
                stop = min(end, start + timedelta(seconds=res * CHUNK_BUCKETS))
                created += SampleStore._rollup_range(cur, source, src.resolution, res, start, stop)
                start = stop
        return created

    @staticmethod
    def _rollup_range(cur, source: str, src_res: int, res: int, start: datetime, stop: datetime) -> int:
        cur.execute(
            "SELECT ts, data FROM stat_samples WHERE source = %s AND resolution = %s AND ts >= %s AND ts < %s "
            "ORDER BY ts",
            (source, src_res, start, stop),
        )
        buckets: dict[datetime, list[tuple[dict, float]]] = defaultdict(list)
        for ts, data in cur.fetchall():
            if isinstance(data, dict):
                buckets[bucket_start(ts, res)].append((data, float(data.get("n") or 1)))
        values = []
        for ts in sorted(buckets):
            group = buckets[ts]
            data = merge(group)
            data["n"] = int(sum(w for _, w in group))
            values.append((source, ts, res, data))
        if values:
            _insert(cur, values)
        return len(values)
