"""Durable cursors over a history table, for the leader's loops.

`EventDeriver` reads a table's rows after a cursor kept in `event_cursors`
and acts on them in the transaction that moves the cursor; webhook
deliveries (pipeline/webhooks.py) and opt-out keywords (pipeline/optouts.py)
are built on it.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

from sqlalchemy import Row, text

from smsgw_common.db import session_scope

log = logging.getLogger(__name__)


class Gap(NamedTuple):
    """Ids not visible yet between rows that are (a writer still committing, or a rollback)."""

    first: int
    last: int
    seen: float  # monotonic time it was first seen


class EventDeriver(ABC):
    """Acts on a history table's rows past a durable cursor.

    The cursor (`event_cursors.last_id`) says: every row up to here has been
    handled. It moves in the transaction that handles them, under a row
    lock, so two leaders overlapping at a handover serialise; the insert is
    idempotent, so moving it back (or losing this process's memory) replays
    without duplicates.

    Ids come from a sequence, and concurrent writers can commit out of order:
    id 11 may be visible while id 10 is still being written. The events after
    such a gap are handled at once (latency does not wait), but the cursor
    stays before the gap until the row shows up or `gap_settle` seconds pass
    (a rolled-back insert leaves a gap forever; writers' transactions are
    short). Gaps are remembered in memory only: a new leader re-reads from
    the cursor, which is safe.

    A consumer sets `cursor_name`, `start_sql` (where a missing cursor
    starts), `rows_sql` (the rows, aliased `e`, with an `id` column) and
    `handle()`.
    """

    cursor_name: str
    start_sql: str
    rows_sql: str

    def __init__(self, sessionmaker, batch: int = 500, gap_settle: float = 60.0, max_gaps: int = 200):
        self.sessionmaker = sessionmaker
        self.batch = batch
        self.gap_settle = gap_settle
        self.max_gaps = max_gaps
        self._cursor: int | None = None
        self.failed = False  # the last run_round failed
        self._scanned_to = 0
        self._gaps: list[Gap] = []

    def _lock_cursor(self, session) -> int:
        last = session.execute(
            text("SELECT last_id FROM event_cursors WHERE name = :n FOR UPDATE"), {"n": self.cursor_name}
        ).scalar()
        if last is None:
            # The migration creates the row; if it was removed, start at the
            # present instead of re-delivering all of history.
            session.execute(
                text(
                    f"INSERT INTO event_cursors (name, last_id) VALUES (:n, ({self.start_sql})) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                {"n": self.cursor_name},
            )
            last = session.execute(
                text("SELECT last_id FROM event_cursors WHERE name = :n FOR UPDATE"), {"n": self.cursor_name}
            ).scalar()
            log.warning("event cursor %s was missing; starting at id %s", self.cursor_name, last)
        return int(last)

    def run_once(self) -> tuple[int, bool]:
        """(deliveries inserted, whether more events are waiting)."""
        now = time.monotonic()
        with session_scope(self.sessionmaker) as session:
            cursor = self._lock_cursor(session)
            if cursor != self._cursor:
                # First round, another leader moved it, or an operator rewound it.
                scanned_to, gaps = cursor, []
            else:
                scanned_to, gaps = self._scanned_to, list(self._gaps)
            rows: list[Row[Any]] = []
            if gaps:
                clauses = " OR ".join(f"e.id BETWEEN :lo{i} AND :hi{i}" for i in range(len(gaps)))
                params = {}
                for i, (lo, hi, _) in enumerate(gaps):
                    params[f"lo{i}"], params[f"hi{i}"] = lo, hi
                late = session.execute(text(self.rows_sql + f" WHERE {clauses} ORDER BY e.id"), params).all()
                gaps = _subtract(gaps, [r.id for r in late])
                rows.extend(late)
            new = session.execute(
                text(self.rows_sql + " WHERE e.id > :after ORDER BY e.id LIMIT :n"),
                {"after": scanned_to, "n": self.batch},
            ).all()
            expected = scanned_to + 1
            for r in new:
                if r.id > expected:
                    gaps.append(Gap(expected, r.id - 1, now))
                expected = r.id + 1
            if new:
                scanned_to = new[-1].id
            rows.extend(new)
            gaps = [g for g in gaps if now - g.seen < self.gap_settle][-self.max_gaps :]
            new_cursor = (gaps[0].first - 1) if gaps else scanned_to
            inserted = self.handle(session, rows) if rows else 0
            if new_cursor != cursor:
                session.execute(
                    text("UPDATE event_cursors SET last_id = :c, updated_at = now() WHERE name = :n"),
                    {"c": new_cursor, "n": self.cursor_name},
                )
        # Committed: only now does this process believe it.
        self._cursor, self._scanned_to, self._gaps = new_cursor, scanned_to, gaps
        return inserted, len(new) >= self.batch

    @abstractmethod
    def handle(self, session, rows) -> int:
        """Act on `rows` (new, or late after a gap) in the cursor's
        transaction, idempotently; returns how much it did."""

    def forget(self) -> None:
        self._cursor = None

    def run_round(self, what: str) -> bool:
        """One `run_once` for a background loop: True when more rows wait. A
        failure is logged and the in-memory position dropped, so the next
        round starts again from the committed cursor; `failed` says so."""
        try:
            more = self.run_once()[1]
        except Exception:
            self.forget()
            self.failed = True
            log.exception("%s failed", what)
            return False
        self.failed = False
        return more


def _subtract(gaps: list[Gap], ids: list[int]) -> list[Gap]:
    """The gap ranges without `ids` (ids that showed up late), in order."""
    out = []
    found = sorted(set(ids))
    for lo, hi, seen in gaps:
        start = lo
        for i in found:
            if i < start or i > hi:
                continue
            if i > start:
                out.append(Gap(start, i - 1, seen))
            start = i + 1
        if start <= hi:
            out.append(Gap(start, hi, seen))
    return sorted(out)
