"""Leader election: exactly one process per deployment runs the pipeline's loops.

A session-level Postgres advisory lock on a dedicated connection, not a Redis
key: the loops' correctness already lives in Postgres (cursors, row locks), so
a Redis outage or eviction cannot make two leaders, and a dead leader's lock
goes with its connection (keepalives catch a vanished host). The holder's id
is its connection's application_name, so any process can tell who leads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import zlib
from collections.abc import Callable

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from smsgw_api.core.runtime import Runtime
from smsgw_api.pipeline.loop import WakeableLoop
from smsgw_common.db import DEAD_LINK_ARGS

log = logging.getLogger(__name__)

# The first half of the two-key advisory lock says "smsgw leader" (b"SMSG");
# the second is the deployment's MQTT prefix, so two deployments on one
# database elect separately.
LOCK_CLASS = 0x534D5347
APP_NAME_PREFIX = "smsgw-leader "

_TRY_LOCK = text("SELECT pg_try_advisory_lock(:a, :b)")
_UNLOCK = text("SELECT pg_advisory_unlock(:a, :b)")
_HOLDER = text(
    "SELECT l.pid = pg_backend_pid() AS mine, a.application_name FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :a AND l.objid = :b AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def lock_keys(prefix: str) -> tuple[int, int]:
    return LOCK_CLASS, zlib.crc32(prefix.encode()) & 0x7FFFFFFF


class Leader(WakeableLoop):
    """Every pipeline process runs one: each round it takes the lock if free,
    or checks that it still holds it; `on_step_up` / `on_step_down` start and
    stop the leader's loops."""

    thread_name = "leader-election"

    def __init__(self, runtime: Runtime, on_step_up: Callable[[], None], on_step_down: Callable[[], None]):
        super().__init__(max(runtime.pipeline.leader_ttl / 3, 0.2))
        self.runtime = runtime
        self.keys = lock_keys(runtime.mqtt.prefix)
        self.me = f"{socket.gethostname()[:24]}:{os.getpid()}:{os.urandom(3).hex()}"
        self.on_step_up, self.on_step_down = on_step_up, on_step_down
        self.is_leader = False
        self.leader_id: str | None = None
        self._lock = threading.Lock()
        self._engine = create_engine(
            runtime.settings.database_url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            # A leader whose host vanished must lose the lock within seconds.
            connect_args={**DEAD_LINK_ARGS, "application_name": (APP_NAME_PREFIX + self.me)[:63]},
        )
        self._conn: Connection | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.elect()
                self.round_done()
            except Exception:
                log.exception("leader election round failed")
                self._lost_connection()
            self.stopping.wait(self.period)
        self.release()

    def elect(self) -> None:
        with self._lock:
            if self.stopping.is_set():
                return
            if self._conn is None:
                self._conn = self._engine.connect()
            if not self.is_leader and self._conn.execute(_TRY_LOCK, self._params()).scalar():
                self.is_leader = True
                log.info("became the events leader", extra={"leader": self.me})
                self.on_step_up()
            holder = self._conn.execute(_HOLDER, self._params()).first()
            self.leader_id = holder.application_name.removeprefix(APP_NAME_PREFIX) if holder else None
            if self.is_leader and not (holder and holder.mine):
                # Not expected while the connection lives; never run two leaders.
                log.warning("lost the events leadership")
                self._step_down()

    def _params(self) -> dict:
        return {"a": self.keys[0], "b": self.keys[1]}

    def _step_down(self) -> None:
        if self.is_leader:
            self.is_leader = False
            self.on_step_down()

    def _lost_connection(self) -> None:
        # The lock went (or will go) with the connection: step down at once,
        # before another process can take over.
        with self._lock:
            self._step_down()
            self.leader_id = None
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.invalidate()
                except Exception:
                    pass

    def release(self) -> None:
        """Hand over at once (a clean exit, a restart) instead of when the
        connection drops."""
        self.stopping.set()
        with self._lock:
            self._step_down()
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.execute(_UNLOCK, self._params())
                    conn.close()
                except Exception:
                    pass
            self.leader_id = None
        self._engine.dispose()
