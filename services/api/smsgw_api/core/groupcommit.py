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

A request that waits longer than `wait_timeout` gets `CommitTimeout`, which
says honestly what became of its item (see `_give_up`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class CommitTimeout(TimeoutError):
    """The item was not committed within the wait. `written` is False when it
    was withdrawn before any transaction took it (it will never be written:
    a retry is safe), None when a transaction holding it is still running (it
    may yet commit: the outcome is unknown)."""

    def __init__(self, message: str, written: bool | None):
        super().__init__(message)
        self.written = written


class _Slot:
    __slots__ = ("error", "event", "item", "lead", "result")

    def __init__(self, item):
        self.item = item
        self.event = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.lead = False


class GroupCommitter:
    def __init__(
        self,
        engine,
        write_batch: Callable[[Any, list], list],
        max_batch: int = 100,
        wait_timeout: float = 30.0,
        after_commit: Callable[[list, list], None] | None = None,
    ):
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
                self._give_up(slot)
            if not slot.lead:
                return self._outcome(slot)
        self._lead()
        return self._outcome(slot)

    def _give_up(self, slot: _Slot) -> None:
        """After the wait ran out: raise CommitTimeout, or return if the slot
        was made the next leader meanwhile.

        Not waiting on without end: a commit that hangs (a locked table, a
        dead disk) would pile up requests until every client timed out
        without any answer. Not a plain 500 either: a 500 reads as "failed"
        while the row may still be committed a moment later, and a client
        that sends again without its Idempotency-Key would then send twice.
        So the answer says what is known. A slot still waiting in the queue
        is withdrawn under the lock, so no transaction can take it any more:
        it is definitely not written. A slot that a running transaction
        already holds may still commit: its outcome is unknown, and only a
        retry with the same Idempotency-Key (which replays the stored
        response if the row did commit) settles it without a duplicate."""
        with self._lock:
            if slot.lead:
                return  # the previous leader handed over to us just now
            if slot in self._pending:
                self._pending.remove(slot)
                raise CommitTimeout("the database did not commit in time; the item was not written", False)
        if slot.event.is_set():
            return  # its transaction ended just now; the outcome is known
        raise CommitTimeout("the database did not commit in time; the item may still be committed", None)

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
                else:
                    # Under the lock: a successor whose wait runs out now
                    # sees that it leads and must not withdraw (_give_up).
                    successor.lead = True
            for slot in batch:
                slot.event.set()
            if successor is not None:
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
