"""The collector loop: sample, buffer, write in small batches, maintain.

It runs in its own process and only ever writes `stat_samples`, so it can
neither block nor slow the message path. When Postgres is down the samples
wait in a bounded buffer (oldest dropped first) and are written on recovery.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
import time
from collections import deque

from smsgw_common import selfstats
from smsgw_common.mqtt import Bus
from smsgw_common.topics import Topics

from .components import ComponentTracker, ModemTracker
from .exporter import LatestSample, serve
from .sampler import HostSampler, utc
from .settings import StatsSettings
from .store import SampleStore

log = logging.getLogger(__name__)

MAX_PENDING = 2000  # ~5.5 h at 10 s: enough to ride out a database restart


class Collector:
    def __init__(self, settings: StatsSettings, bus: Bus | None = None):
        self.settings = settings
        self.store = SampleStore(settings.common.database.url, settings.tiers)
        self.sampler = HostSampler(settings.disk_path, settings.host_proc, settings.thermal_path)
        self.topics = Topics(settings.common.mqtt.prefix)
        self.components = ComponentTracker(ttl=settings.component_ttl)
        self.bus = bus or Bus(
            settings.common.mqtt,
            client_id=f"stats-collector-{socket.gethostname()[:20]}-{os.getpid()}",
        )
        self.modems = ModemTracker(self.topics)
        self.bus.subscribe(self.topics.all_stats(), self.components.handle, qos=0)
        self.bus.subscribe(self.topics.all_states(), self.modems.handle, qos=1)
        self.latest = LatestSample()
        self.pending: deque = deque(maxlen=MAX_PENDING)
        self.stop_event = threading.Event()
        self._reporter: selfstats.Reporter | None = None
        self._http: socketserver.TCPServer | None = None

    def sample_once(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        data = self.sampler.sample(now)
        data["components"] = self.components.snapshot()
        data["modems"] = self.modems.snapshot()
        self.pending.append((utc(now), data))
        self.latest.set(now, data, len(self.pending))
        return data

    def flush(self) -> bool:
        if not self.pending:
            return True
        batch = list(self.pending)
        try:
            self.store.insert(self.settings.source, batch)
        except Exception as exc:
            self.latest.db_errors += 1
            log.warning("writing %d samples failed, keeping them for the next try: %s", len(batch), exc)
            return False
        for _ in batch:
            self.pending.popleft()
        return True

    def maintain(self, now: float | None = None) -> dict | None:
        try:
            result = self.store.maintain(utc(time.time() if now is None else now))
        except Exception as exc:
            self.latest.db_errors += 1
            log.warning("stat_samples maintenance failed: %s", exc)
            return None
        if any(result["rolled_up"].values()) or any(result["expired"].values()):
            log.info("stat_samples maintained", extra=result)
        return result

    def start_side_services(self) -> None:
        self.bus.start()
        self._reporter = selfstats.start(self.bus, self.topics, "stats-collector", self.settings.self_interval)
        if self.settings.metrics_port:
            self._http = serve(self.latest, self.settings.metrics_port, self.settings.metrics_addr)
            log.info("metrics on %s:%d/metrics", self.settings.metrics_addr, self.settings.metrics_port)

    def run(self) -> None:
        """Sample on a fixed schedule until `stop_event` is set, then flush."""
        s = self.settings
        self.start_side_services()
        next_sample = time.monotonic()
        last_flush = last_maintenance = time.monotonic()
        self.maintain()
        while not self.stop_event.is_set():
            try:
                self.sample_once()
            except Exception:
                # A figure that cannot be read this time (a flaky sysfs file,
                # a vanished mount) must not end the collector.
                log.exception("taking a sample failed")
            mono = time.monotonic()
            if mono - last_flush >= s.flush_interval:
                self.flush()
                last_flush = mono
            if mono - last_maintenance >= s.maintenance_interval:
                # Flush first so the rollup sees every sample of a complete bucket.
                if self.flush():
                    self.maintain()
                last_maintenance = time.monotonic()
            next_sample += s.interval
            delay = next_sample - time.monotonic()
            if delay < 0:
                # Fell behind (suspended, slow database): skip, do not burst.
                next_sample = time.monotonic() + s.interval
                delay = s.interval
            self.stop_event.wait(delay)
        self.shutdown()

    def shutdown(self) -> None:
        log.info("stopping: writing %d pending samples", len(self.pending))
        self.flush()
        if self._reporter:
            self._reporter.stop()
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        try:
            self.bus.stop()
        except Exception:
            log.exception("mqtt stop failed")
        self.store.close()
