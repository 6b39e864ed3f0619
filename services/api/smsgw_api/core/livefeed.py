"""Live events leave a process numbered, in order, and survive a Redis outage.

Every Socket.IO event goes out through Redis, whose pub/sub fans it out to
the sockets of every API process and replica; pub/sub keeps nothing, so an
event published while Redis is down, or while an API process is still
re-subscribing after it came back, reaches no one. python-socketio's own
publisher logs "Cannot publish to redis... giving up" and drops it. Postgres
holds the truth, so a dashboard can always reload; what it needs is to know
that it must. Hence (docs/realtime.md, "When Redis goes away"):

- every event carries `feed: {stream, audience, seq}`: `stream` names this
  process's feed (new at each start), `audience` the least role that may see
  the event, `seq` counts that audience's events. A client that sees a
  number skipped missed something and reloads from the API;
- while Redis cannot be reached, events wait here, up to `capacity`, and are
  published in order once it is back and the API processes have
  re-subscribed (or `grace` seconds after it came back, whichever is first);
- past `capacity` the held events are dropped (a client must reload anyway)
  and, once Redis is back, each audience is sent `live_resync` with how many
  were dropped and where its count stands;
- the events leader calls `beat()` every LIVE_HEARTBEAT_SECONDS: each
  audience hears `live_heartbeat` with its position. A client that hears no
  beat knows the feed is interrupted, and a position past the last number it
  saw means it missed the tail. No beat goes out while events are held, so
  beats never overtake them.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

import socketio

log = logging.getLogger(__name__)

ROLE_ORDER = ("viewer", "user", "admin")


def rooms_for(min_role: str) -> list[str]:
    """The Socket.IO rooms of every role at least `min_role` (live/ puts each
    socket in the room of its user's role)."""
    return [f"role:{r}" for r in ROLE_ORDER[ROLE_ORDER.index(min_role) :]]


class Publisher(socketio.RedisManager):
    """python-socketio's write-only Redis publisher, except that a publish
    that fails raises instead of being logged and dropped."""

    def __init__(self, url: str, channel: str):
        # Timeouts: a Redis that vanished (rather than refused) must not hold
        # the leader's event thread for longer than this.
        super().__init__(
            url, channel=channel, write_only=True, redis_options={"socket_timeout": 2, "socket_connect_timeout": 2}
        )

    last_received = 0  # API processes that got the last publish

    def _publish(self, data):
        try:
            if not self.connected:
                self._redis_connect()
            self.last_received = int(self.redis.publish(self.channel, self.json.dumps(data)))
        except Exception:
            self.connected = False
            raise

    def subscribers(self) -> int:
        """How many API processes listen on the channel now (raises while Redis is down)."""
        if not self.connected:
            self._redis_connect()
        try:
            return int(self.redis.pubsub_numsub(self.channel)[0][1])
        except Exception:
            self.connected = False
            raise


Held = tuple[str, dict, str]  # event, payload, audience


class LiveFeed:
    """This process's live feed (one per `Runtime`, as `runtime.live`): every
    emit goes through it, under one lock, so numbers go out in order."""

    RETRY_SECONDS = 0.5  # how often the flusher asks whether Redis is back

    def __init__(
        self,
        publisher_factory: Callable[[], Publisher],
        capacity: int = 1000,
        heartbeat_every: float = 1.0,
        grace: float = 3.0,
    ):
        self._factory = publisher_factory
        self.capacity = capacity
        self.heartbeat_every = heartbeat_every
        self.grace = grace
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._reset()

    def _reset(self) -> None:
        """A feed of its own per process: a forked child starts afresh."""
        self._pid = os.getpid()
        self.stream = secrets.token_hex(6)
        self._publisher: Publisher | None = None
        self._seq = dict.fromkeys(ROLE_ORDER, 0)
        self._held: deque[Held] = deque()
        self._dropped = 0
        self._down = False
        self._back_at: float | None = None
        self._listeners = 0  # API processes that got the last event published

    # --- what callers use (never raise: Postgres keeps the truth)

    def emit(self, event: str, data: dict, min_role: str = "viewer") -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            self._seq[min_role] += 1
            feed = {"stream": self.stream, "audience": min_role, "seq": self._seq[min_role]}
            item: Held = (event, {**data, "feed": feed}, min_role)
            if not self._down:
                try:
                    self._publish(item)
                    return
                except Exception as exc:
                    self._went_down(exc)
            self._hold(item)

    def beat(self) -> None:
        """Each audience's position; silent while events are held (the
        silence is what tells clients the feed is interrupted)."""
        with self._lock:
            if self._pid != os.getpid():
                self._reset()
            if self._down:
                return
            try:
                for role in ROLE_ORDER:
                    self._publish(("live_heartbeat", self._position(role) | {"every": self.heartbeat_every}, role))
            except Exception as exc:
                self._went_down(exc)

    @property
    def held(self) -> int:
        return len(self._held)

    # --- under the lock

    def _position(self, role: str) -> dict:
        return {"stream": self.stream, "audience": role, "seq": self._seq[role]}

    def _publish(self, item: Held) -> None:
        event, data, min_role = item
        publisher = self._get_publisher()
        publisher.emit(event, data, namespace="/", room=rooms_for(min_role))
        self._listeners = publisher.last_received

    def _get_publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = self._factory()
        return self._publisher

    def _went_down(self, exc: Exception) -> None:
        self._down = True
        self._back_at = None
        log.warning(
            "Redis unreachable (%s): live events are held, up to %d, until it returns",
            exc,
            self.capacity,
            extra={"stream": self.stream},
        )
        threading.Thread(target=self._flush_when_back, name="live-feed-flush", daemon=True).start()

    def _hold(self, item: Held) -> None:
        if self._dropped or len(self._held) >= self.capacity:
            if not self._dropped:
                log.error(
                    "live events dropped: more than %d held while Redis is unreachable; "
                    "dashboards will be told to reload from the API when it returns",
                    self.capacity,
                    extra={"stream": self.stream},
                )
            # Past the bound a client must reload anyway: keeping the older
            # ones would only cost memory.
            self._dropped += len(self._held) + 1
            self._held.clear()
            return
        self._held.append(item)

    def _flush_when_back(self) -> None:
        while True:
            time.sleep(self.RETRY_SECONDS)
            with self._lock:
                if self._pid != os.getpid() or not self._down:
                    return
                if self._try_flush():
                    return

    def _try_flush(self) -> bool:
        try:
            listening = self._get_publisher().subscribers()
        except Exception:
            self._back_at = None
            return False
        if self._back_at is None:
            self._back_at = time.monotonic()
        # An API process that has not re-subscribed yet would miss what is
        # published now; wait for as many listeners as the last event reached.
        if listening < self._listeners and time.monotonic() - self._back_at < self.grace:
            return False
        published = 0
        try:
            if self._dropped:
                for role in ROLE_ORDER:
                    self._publish(("live_resync", self._position(role) | {"dropped": self._dropped}, role))
            while self._held:
                self._publish(self._held[0])
                self._held.popleft()
                published += 1
        except Exception:
            self._back_at = None
            return False
        log.warning(
            "Redis is back: %d held live events published%s",
            published,
            f", {self._dropped} dropped (dashboards told to reload)" if self._dropped else "",
            extra={"stream": self.stream, "listeners": listening},
        )
        self._dropped = 0
        self._down = False
        return True
