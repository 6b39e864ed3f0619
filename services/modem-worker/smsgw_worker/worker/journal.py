"""The worker's outcome journal: every fact learned from the modem is made
durable on the worker's own disk before anything else, and kept until
Postgres holds it (docs/reliability.md).

What goes in (one entry per fact, `kind`):
- `sent`         +CMGS: <mr> for one part (message, part, seq, reference, at)
- `refused`      +CMS/+CME ERROR for one part (nothing left)
- `unconfirmed`  the PDU was written but no +CMGS came (timeout, bare OK/ERROR)
- `unwritten`    the part's `submitting` row may have committed (the connection
                 died during its COMMIT) but its PDU was never written
                 (message, part, at: the submission's time, so that only that
                 submission is undone, never a later one of the same part)
- `pdu`          a +CDS report or +CMT SMS delivered straight to the worker:
                 the only copy once read (a SIM-stored one stays on the SIM
                 until the database holds it, so it is not journaled)

The file is JSON lines, each prefixed with the CRC-32 of its JSON text:
a line torn by a power cut fails its check (or lacks its newline) and is
dropped at the next open, never fatal. A fact is fsync'd before the caller
acts on it. Once the database holds it, an `applied` line follows it,
not fsync'd: losing one only means applying the fact again, and applying is
idempotent. When nothing is pending the file is emptied.

Bound: `max_bytes` of facts not yet applied. Past it `full` is true and the worker takes no new
sends (Lifecycle.may_send); facts are still written, since refusing one
would lose it, and their number is bounded by what was already sent.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "outcomes.jsonl"
REJECTED_NAME = "outcomes.rejected.jsonl"  # facts replay could not apply, for an operator
SENT, REFUSED, UNCONFIRMED, UNWRITTEN = "sent", "refused", "unconfirmed", "unwritten"
PDU, APPLIED = "pdu", "applied"
KINDS = (SENT, REFUSED, UNCONFIRMED, UNWRITTEN, PDU)
SEND_KINDS = (SENT, REFUSED, UNCONFIRMED, UNWRITTEN)  # what became of an AT+CMGS


class JournalError(Exception):
    """The journal cannot be opened or written (disk full, read-only, ...)."""


@dataclass
class Entry:
    seq: int
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    size: int = 0  # bytes of its line


def encode_line(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), sort_keys=True)
    return f"{zlib.crc32(text.encode()):08x} {text}\n".encode()


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of one whole line, or None if it is torn or corrupt."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    text = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(text):
            return None
        record = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("seq"), int)
        or not isinstance(record.get("kind"), str)
    ):
        return None
    return record


class Journal:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.path = Path(directory) / FILE_NAME
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pending: dict[int, Entry] = {}
        self._pending_bytes = 0  # the lines of the pending facts: what the bound counts
        self._counts: Counter[str] = Counter()  # pending facts by kind (cheap to ask every loop turn)
        self._next_seq = 1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open the outcome journal {self.path}: {exc}") from exc
        self._size = os.fstat(self._fd).st_size

    # -- reading back ----------------------------------------------------------
    def _load(self) -> None:
        """Read what an earlier run left: pending facts, and the end of the last whole line."""
        if not self.path.exists():
            return
        good_end = 0
        skipped = 0
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                offset += len(line)
                record = decode_line(line)
                if record is None:
                    skipped += 1
                    continue
                good_end = offset
                seq, kind, data = record["seq"], record["kind"], record.get("data")
                self._next_seq = max(self._next_seq, seq + 1)
                if kind == APPLIED:
                    self._pop(record.get("of", -1))
                elif kind in KINDS and isinstance(data, dict):
                    self._pending[seq] = Entry(seq, kind, data, len(line))
                    self._pending_bytes += len(line)
                    self._counts[kind] += 1
        if skipped:
            log.warning("outcome journal %s: %d torn or corrupt line(s) skipped", self.path, skipped)
        if good_end < self.path.stat().st_size:
            # A torn tail (power cut mid-write): new lines must not follow it.
            os.truncate(self.path, good_end)
        if self._pending:
            log.warning("outcome journal %s: %d fact(s) not yet in the database", self.path, len(self._pending))

    # -- writing -------------------------------------------------------------------
    def append(self, kind: str, **data: Any) -> Entry:
        """Write one fact and fsync it; raises JournalError if the disk refuses."""
        if kind not in KINDS:
            raise ValueError(f"not a journal entry kind: {kind!r}")
        with self._lock:
            line = encode_line({"seq": self._next_seq, "kind": kind, "data": data})
            self._write(line, sync=True)
            entry = Entry(self._next_seq, kind, data, len(line))
            self._next_seq += 1
            self._pending[entry.seq] = entry
            self._pending_bytes += entry.size
            self._counts[kind] += 1
            return entry

    def applied(self, entry: Entry | None) -> None:
        """The database holds `entry` now: it need not be replayed."""
        if entry is None:
            return
        with self._lock:
            if not self._pop(entry.seq):
                return
            try:
                if not self._pending:
                    # Nothing left to replay: start over (no fsync needed; at
                    # worst the old lines come back and are applied again).
                    os.ftruncate(self._fd, 0)
                    self._size = 0
                else:
                    self._write(encode_line({"seq": self._next_seq, "kind": APPLIED, "of": entry.seq}), sync=False)
                    self._next_seq += 1
                    # Over the bound, drop the applied lines once they make
                    # up half the file (so a long replay stays linear).
                    if self._size > self.max_bytes and self._size > 2 * self._pending_bytes:
                        self._compact()
            except OSError as exc:
                log.warning(
                    "outcome journal: cannot mark fact %d applied (%s); it will be applied again", entry.seq, exc
                )

    def reject(self, entry: Entry, reason: str) -> None:
        """A fact that can never be applied (a bug, a hand-edited file): set
        aside in REJECTED_NAME for an operator, so it blocks nothing behind it."""
        record = {"seq": entry.seq, "kind": entry.kind, "data": entry.data, "reason": reason[:500]}
        try:
            with open(self.path.parent / REJECTED_NAME, "ab") as f:
                f.write(encode_line(record))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.error("cannot set aside journal fact %d (%s): %s", entry.seq, exc, record)
        self.applied(entry)

    def _write(self, line: bytes, *, sync: bool) -> None:
        try:
            os.write(self._fd, line)
            if sync:
                os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write the outcome journal {self.path}: {exc}") from exc
        self._size += len(line)

    def _compact(self) -> None:
        """Rewrite the file with only the pending facts (under the lock)."""
        tmp = self.path.with_suffix(".tmp")
        data = b"".join(encode_line({"seq": e.seq, "kind": e.kind, "data": e.data}) for e in self._pending.values())
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(data)

    # -- state -------------------------------------------------------------------
    def pending(self, limit: int | None = None) -> list[Entry]:
        """Facts not yet in the database, oldest first (the dict keeps the
        order they were written in), at most `limit`."""
        with self._lock:
            return list(itertools.islice(self._pending.values(), limit))

    @property
    def size(self) -> int:
        return self._size

    def count(self, *kinds: str) -> int:
        """How many facts of these kinds (all, if none given) are pending."""
        return sum(self._counts[k] for k in kinds or KINDS)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def full(self) -> bool:
        """The facts not yet in the database reach the bound (the file
        itself stays under twice the bound: applied lines are compacted)."""
        return self._pending_bytes >= self.max_bytes

    def _pop(self, seq: int) -> bool:
        entry = self._pending.pop(seq, None)
        if entry is None:
            return False
        self._pending_bytes -= entry.size
        self._counts[entry.kind] -= 1
        return True

    def close(self) -> None:
        with self._lock:
            try:
                os.close(self._fd)
            except OSError:
                pass
