"""The latest RSS/CPU each service reported on `smsgw/stats/{source}`.

Payloads are checked against `smsgw_common.schemas.StatsReport`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import ClassVar

from smsgw_common.schemas import StatsReport, parse

log = logging.getLogger(__name__)


class ComponentTracker:
    def __init__(self, ttl: float = 300.0, clock=time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._latest: dict[str, tuple[float, StatsReport]] = {}
        self._lock = threading.Lock()

    def handle(self, topic: str, payload: bytes) -> None:
        """MQTT handler; an invalid payload is logged and dropped."""
        report = parse(StatsReport, payload)
        if report is None:
            return
        # The topic names the publisher; a payload claiming another source
        # cannot overwrite that one's figures. (The ACL lets only the stack's
        # own service users write stats/+, not any one source's topic.)
        source = topic.rsplit("/", 1)[-1]
        with self._lock:
            self._latest[source] = (self.clock(), report)

    def snapshot(self) -> dict[str, dict]:
        """{source: {rss_bytes, cpu_percent, cpu_seconds, ts}} for sources heard
        from within the TTL (a restarted worker's old pid drops out)."""
        cutoff = self.clock() - self.ttl
        out = {}
        with self._lock:
            for source in [s for s, (seen, _) in self._latest.items() if seen < cutoff]:
                del self._latest[source]
            items = list(self._latest.items())
        for source, (_, report) in sorted(items):
            entry = {
                "rss_bytes": report.rss_bytes,
                "cpu_percent": report.cpu_percent,
                "cpu_seconds": report.cpu_seconds,
                "ts": report.ts.isoformat(),
            }
            out[source] = {k: v for k, v in entry.items() if v is not None}
        return out


class ModemTracker:
    """The latest retained state of each modem (`smsgw/modems/{id}/state`), so
    that samples record signal and registration over time. Only the few
    fields a time series needs are taken, each checked for its type."""

    FIELDS: ClassVar[dict[str, type]] = {
        "online": bool,
        "signal_dbm": int,
        "signal_quality": int,
        "registration": str,
        "operator": str,
    }

    def __init__(self, topics):
        self.topics = topics
        self._latest: dict[str, dict] = {}
        self._lock = threading.Lock()

    def handle(self, topic: str, payload: bytes) -> None:
        modem_id = self.topics.modem_id_of(topic)
        if modem_id is None:
            return
        if not payload:
            # An empty retained message deletes the modem's state.
            with self._lock:
                self._latest.pop(modem_id, None)
            return
        try:
            obj = json.loads(payload)
            if not isinstance(obj, dict) or not isinstance(obj.get("online"), bool):
                raise ValueError("online: a boolean is required")
        except ValueError as exc:
            log.warning("dropping invalid modem state on %s: %s", topic, str(exc)[:200])
            return
        state = {}
        for name, kind in self.FIELDS.items():
            value = obj.get(name)
            if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                state[name] = value
        with self._lock:
            self._latest[modem_id] = state

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {modem_id: dict(state) for modem_id, state in sorted(self._latest.items())}
