"""Group commit: concurrent sends of one process share a transaction.

Each send must be committed (fsync'd) before it is answered. On a small
machine or an SD card one fsync takes milliseconds, so one transaction per
request caps a worker at a few hundred sends per second however little CPU
they need. Here the first request to arrive writes its row and commits; the
requests that arrive meanwhile queue up, and the next of them writes all of
them in one transaction with one commit. Nobody waits for a timer, and every
request is still answered only after its own row is durable.

If a batch fails (say one row breaks a constraint), its rows are retried one
transaction each, so only the faulty request sees the error.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


class _Slot:
    __slots__ = ("item", "event", "result", "error", "lead")

    def __init__(self, item):
        self.item = item
        self.event = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.lead = False


class GroupCommitter:
    def __init__(self, engine, write_batch: Callable[[Any, list], list], max_batch: int = 100,
                 wait_timeout: float = 30.0, after_commit: Callable[[list, list], None] | None = None):
        """`write_batch(connection, items)` writes the items in the open
        transaction and returns one result per item, in order;
        `after_commit(items, results)` runs once per committed batch."""
        self.engine = engine
        self.write_batch = write_batch
        self.after_commit = after_commit
        self.max_batch = max_batch
        self.wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._busy = False

    def submit(self, item):
        """Write `item` in a shared transaction; return its result once that
        transaction committed, or raise its error."""
        slot = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            leading = not self._busy
            self._busy = True
        if not leading:
            if not slot.event.wait(self.wait_timeout):
                raise TimeoutError("the database did not commit in time")
            if not slot.lead:
                return self._outcome(slot)
        self._lead()
        return self._outcome(slot)

    @staticmethod
    def _outcome(slot: _Slot):
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _lead(self) -> None:
        with self._lock:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        try:
            self._write(batch)
        finally:
            with self._lock:
                successor = self._pending[0] if self._pending else None
                if successor is None:
                    self._busy = False
            for slot in batch:
                slot.event.set()
            if successor is not None:
                successor.lead = True
                successor.event.set()

    def _write(self, batch: list[_Slot]) -> None:
        try:
            with self.engine.begin() as conn:
                results = self.write_batch(conn, [slot.item for slot in batch])
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            log.warning("group commit of %d rows failed (%s); retrying one by one", len(batch), exc)
            for slot in batch:
                try:
                    with self.engine.begin() as conn:
                        slot.result = self.write_batch(conn, [slot.item])[0]
                    self._after([slot.item], [slot.result])
                except BaseException as one:
                    slot.error = one
            return
        for slot, result in zip(batch, results):
            slot.result = result
        self._after([slot.item for slot in batch], results)

    def _after(self, items: list, results: list) -> None:
        if self.after_commit is None:
            return
        try:
            self.after_commit(items, results)
        except Exception:
            log.exception("after-commit hook failed")
