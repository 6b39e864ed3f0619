"""Every service reports its own RSS and CPU on `smsgw/stats/{source}`.

    from smsgw_common import selfstats
    reporter = selfstats.start(bus, Topics(prefix), "modem-worker-usb0", interval=30)
    ...
    reporter.stop()

A daemon thread publishes a `StatsReport` payload at QoS 0 every `interval`
seconds through the service's existing Bus (no extra connection). It reads
/proc/self/statm and os.times(), so it needs no psutil and costs a few
microseconds per report. Under gevent's monkey patching the thread is a
greenlet and its sleep yields, which is what we want.

Processes that share a service name (gunicorn workers) should pass a source
that tells them apart, e.g. `f"api-{os.getpid()}"`; the collector forgets a
source that stopped reporting.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .schemas import StatsReport
from .topics import Topics, check_id

if TYPE_CHECKING:  # the collector's image imports this module, not paho's wrapper
    from .mqtt import Bus

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        # Not Linux: the peak is the best the standard library offers.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Reporter:
    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        source: str,
        interval: float = 30.0,
        extra: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("selfstats interval must be positive")
        self.bus = bus
        self.topic = topics.stats(check_id(source))
        self.source = source
        self.interval = interval
        self.extra = extra
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"selfstats-{source}", daemon=True)
        self._last: tuple[float, float] | None = None

    def report(self) -> StatsReport:
        """Build one report; CPU % is over the time since the previous one
        (of one core, so a busy 2-thread process can show up to 200)."""
        wall, cpu = time.monotonic(), cpu_seconds()
        percent = None
        if self._last is not None and wall > self._last[0]:
            percent = round(100.0 * (cpu - self._last[1]) / (wall - self._last[0]), 2)
        self._last = (wall, cpu)
        extra: dict[str, object] = {"pid": os.getpid()}
        if self.extra is not None:
            try:
                extra.update(self.extra())
            except Exception:
                log.exception("selfstats extra() failed")
        return StatsReport(
            source=self.source,
            ts=datetime.now(UTC),
            rss_bytes=rss_bytes(),
            cpu_percent=percent,
            cpu_seconds=round(cpu, 3),
            extra=extra,
        )

    def publish_once(self) -> bool:
        return self.bus.publish(self.topic, self.report().to_json(), qos=0)

    def _run(self) -> None:
        self.report()  # prime the CPU baseline so the first publish has a percent
        while not self._stop.wait(self.interval):
            try:
                self.publish_once()
            except Exception:
                # Telemetry must never take a service down.
                log.exception("selfstats publish failed")

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def start(
    bus: Bus, topics: Topics, source: str, interval: float = 30.0, extra: Callable[[], dict[str, object]] | None = None
) -> Reporter:
    return Reporter(bus, topics, source, interval, extra).start()
