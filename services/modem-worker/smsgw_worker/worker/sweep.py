"""The periodic sweep: rows nobody can read set aside as `failed`
(queue.quarantine_unreadable), expired leases back to the queue (or `unknown`),
messages past their validity or report timeout expired, and concatenated
SMS whose parts stopped coming delivered as they are."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from smsgw_common import queue as message_queue

from .context import WorkerContext
from .inbox import Inbox

log = logging.getLogger(__name__)


class Sweep:
    def __init__(self, ctx: WorkerContext, inbox: Inbox) -> None:
        self.ctx = ctx
        self.inbox = inbox

    def run(self) -> None:
        ctx = self.ctx
        try:
            with ctx.Session() as session:
                changed = message_queue.sweep(
                    session, source=ctx.worker_id, report_timeout=timedelta(seconds=ctx.settings.report_timeout)
                )
                if changed:
                    ctx.want_claim = True
                for msg, state in changed:
                    ctx.publish_event(msg, state)
            self.inbox.flush_incomplete()
        except SQLAlchemyError:
            log.exception("sweep failed")
