"""Applying STOP/START from the inbound history (events leader only).

Postgres is the truth for which keywords have been applied: the leader reads
the `messages` table past a durable cursor of its own (`event_cursors` row
`optouts.inbound_messages`, pipeline/cursor.py) and applies every inbound
keyword in the transaction that moves the cursor. MQTT only wakes it up early.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DataError, IntegrityError

from smsgw_api.core.runtime import Runtime
from smsgw_api.domain.optouts import apply_keyword, keyword_of
from smsgw_api.pipeline.cursor import EventDeriver
from smsgw_api.pipeline.loop import WakeableLoop

log = logging.getLogger(__name__)

CURSOR_NAME = "optouts.inbound_messages"


class InboundKeywords(EventDeriver):
    """Applies STOP/START from `messages` rows past the durable cursor.

    Every message id is scanned, outbound ones too: ids come from one
    sequence, so only a contiguous scan tells a row still being committed
    (handled late, the cursor waits before it) from one of the other
    direction. Applying is idempotent (an opt-out already there, an opt-in
    of a number not listed: no change, no announcement), so a replay after a
    hand-over or a rewound cursor changes nothing; changes are announced to
    admins only once their transaction has committed.
    """

    cursor_name = CURSOR_NAME
    # Where a missing cursor starts: the present (migration 0003 creates it).
    start_sql = "SELECT coalesce(max(id), 0) FROM messages WHERE direction = 'inbound'"
    rows_sql = """
        SELECT e.id, e.direction, e.sender,
               CASE WHEN e.direction = 'inbound' THEN e.message END AS message
        FROM messages e
    """

    def __init__(self, runtime: Runtime, **kw):
        super().__init__(runtime.sessionmaker, **kw)
        self.runtime = runtime
        self._changes: list[dict] = []

    def handle(self, session, rows) -> int:
        applied = 0
        for row in rows:
            if row.direction != "inbound" or keyword_of(row.message) is None:
                continue
            try:
                # A row the list cannot take (bad data) must not block every
                # later keyword behind the cursor: it is logged and passed.
                with session.begin_nested():
                    change = apply_keyword(session, self.runtime.pipeline, row.sender, row.message)
            except (DataError, IntegrityError):
                log.exception("opt-out keyword of inbound message %s could not be applied", row.id)
                continue
            applied += 1
            if change:
                self._changes.append(change)
        return applied

    def run_once(self) -> tuple[int, bool]:
        self._changes = []
        try:
            result = super().run_once()
            changes = self._changes  # committed
        finally:
            self._changes = []
        for change in changes:
            # Only admins manage the list, so only they are told about changes.
            self.runtime.emit("opt_out_update", change, min_role="admin")
        return result


class KeywordApplier(WakeableLoop):
    """The events leader's loop around `InboundKeywords`: a round at once on
    `wake()` (an inbound MQTT event), else every WEBHOOK_POLL_SECONDS (the
    same period as the webhook dispatcher's reading of the history), so a
    keyword whose MQTT copy was lost waits at most that long."""

    thread_name = "optout-keywords"

    def __init__(self, runtime: Runtime):
        super().__init__(runtime.pipeline.webhook_poll_interval)
        self.deriver = InboundKeywords(runtime)

    def run(self) -> None:
        while not self.stopping.is_set():
            self._wake.clear()
            more = self.deriver.run_round("applying opt-out keywords")
            if not self.deriver.failed:
                self.round_done()
            if not more:
                self._wake.wait(self.period)
