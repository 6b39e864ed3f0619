"""The shape of every background loop: a daemon thread that can be woken
early, stopped, and asked when it last completed a round (for /readyz)."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

from smsgw_api.core.liveness import LoopStatus

log = logging.getLogger(__name__)

# A loop is stuck when it has not completed a round for this many of its
# periods, and never sooner than STALE_MIN_SECONDS: a slow round on a busy
# Pi (a big sweep, a database failover) is not a dead loop.
STALE_PERIODS = 10
STALE_MIN_SECONDS = 60.0


class WakeableLoop(ABC):
    """`run()` loops until `stopping` is set, calling `round_done()` after
    each round that succeeded (a loop failing every round is as stuck as
    one that hangs); `wake()` cuts its current wait short."""

    thread_name = "background"

    def __init__(self, period: float) -> None:
        self.period = period
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = time.monotonic()
        self._rounds = 0

    @property
    def stale_after(self) -> float:
        return max(self.period * STALE_PERIODS, STALE_MIN_SECONDS)

    def round_done(self) -> None:
        self._last = time.monotonic()
        self._rounds += 1

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except BaseException:
            # Not restarted: a loop that keeps dying needs a person, and
            # /readyz (503) and /metrics say so.
            log.exception("background loop %s died", self.thread_name)

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def status(self) -> LoopStatus:
        alive = self._thread is not None and self._thread.is_alive()
        return LoopStatus(
            self.thread_name, alive, self._rounds, round(time.monotonic() - self._last, 3), self.stale_after
        )

    @abstractmethod
    def run(self) -> None: ...
