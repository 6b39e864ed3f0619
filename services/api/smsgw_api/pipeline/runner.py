"""The pipeline: the events leader's loops, and the entry points that run them.

Every process that runs the pipeline takes part in the election
(pipeline/leader.py); the one that leads runs:

- the event consumer (pipeline/events.py): MQTT events -> browsers, modem webhooks;
- the webhook dispatcher (pipeline/webhooks.py);
- the opt-out keyword applier (pipeline/optouts.py);
- the sweeper (pipeline/sweeper.py).

Two ways to run it, one function (`start`): inside each API worker, started by
gunicorn's `post_worker_init` through `smsgw_api.app.start_pipeline` (the
default: cheap on a Pi), or alone with `python -m smsgw_api pipeline`, which
builds no HTTP app at all (then set PIPELINE_BACKGROUND=off on the API).
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading

from smsgw_api.core.liveness import PipelineStatus
from smsgw_api.core.runtime import Runtime
from smsgw_api.core.settings import ApiSettings
from smsgw_api.domain.routing import Router, make_router
from smsgw_api.pipeline.events import EventConsumer
from smsgw_api.pipeline.leader import Leader
from smsgw_api.pipeline.loop import WakeableLoop
from smsgw_api.pipeline.optouts import KeywordApplier
from smsgw_api.pipeline.sweeper import Sweeper
from smsgw_api.pipeline.webhooks import Dispatcher

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, runtime: Runtime, router: Router | None = None):
        self.runtime = runtime
        self.router = router or make_router(runtime)
        self.loops: list[WakeableLoop] = []
        self.leader = Leader(runtime, self._step_up, self._step_down)

    def _step_up(self) -> None:
        consumer = EventConsumer(self.runtime)
        dispatcher = Dispatcher(self.runtime)
        keywords = KeywordApplier(self.runtime)
        sweep = Sweeper(self.runtime, self.router)
        consumer.on_modem_offline = sweep.wake
        consumer.on_deliveries = dispatcher.wake
        consumer.on_inbound = keywords.wake
        loops = [consumer, dispatcher, keywords, sweep]
        for loop in loops:
            loop.start()
        # Listed once running: /readyz must not see a loop not started yet as dead.
        self.loops = loops

    def _step_down(self) -> None:
        loops, self.loops = self.loops, []
        for loop in loops:
            try:
                loop.stop()
            except Exception:
                log.exception("stopping %s failed", loop.thread_name)

    def start(self) -> Pipeline:
        self.leader.start()
        return self

    def stop(self) -> None:
        self.leader.release()

    def status(self) -> PipelineStatus:
        loops = (self.leader.status(), *(loop.status() for loop in list(self.loops)))
        return PipelineStatus(
            is_leader=self.leader.is_leader, leader_id=self.leader.leader_id, me=self.leader.me, loops=loops
        )


def start(runtime: Runtime, router: Router | None = None) -> Pipeline:
    pipeline = Pipeline(runtime, router).start()
    # A process that exits cleanly (restart, scale down) hands over at once.
    atexit.register(pipeline.stop)
    return pipeline


def run(settings: ApiSettings) -> int:
    """`python -m smsgw_api pipeline`: database, broker, Redis and the loops
    until SIGTERM; no Flask app, no HTTP."""
    runtime = Runtime(settings)
    pipeline = start(runtime)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    log.info("pipeline running", extra={"candidate": pipeline.leader.me})
    done.wait()
    pipeline.stop()
    runtime.close()
    return 0
