"""Hearing at once that another process changed a credential.

Every API process caches who a key or token belongs to (core/security.py,
AuthCache) and must stop trusting that the moment any process revokes a key
or changes a user. The process that makes the change publishes on a Redis
channel (`forget_credentials`); every process keeps one subscription to it,
and any byte that arrives on it (a change, or the answer to a heartbeat)
raises this process's `epoch`. A cached identity is trusted only under the
epoch it was read at, so the cache costs no round trip per request.

Why a request cannot miss a change that finished before it arrived: Redis
writes the published message to every subscriber's socket before the
publisher's HTTP answer can even leave, so by the time a later request reaches
this process the bytes are in this socket's kernel buffer. `current()` reads
the socket (non-blocking, under the lock the listener reads under) before it
answers, so a request never trusts the cache while a change is still unread,
whatever the scheduler did with the listener.

Why a reconnect cannot lose one: while the subscription is not confirmed
(Redis down, restarting, a new connection not yet subscribed) `current()` is
None and nothing is trusted from the cache (every request asks Postgres).
When a subscription is confirmed the epoch is raised, so whatever was cached
before, under a possibly missed change, is never trusted again. A heartbeat
(PING every HEARTBEAT_SECONDS, answered on the subscription) detects a
connection that died without a word; AUTH_CACHE_SECONDS bounds the rest.
With `rediss://` there is no subscription (not implemented): the cache stays off.

A plain socket, not redis-py's PubSub: that reconnects and resubscribes by
itself, so it could not tell us about the gap, and it reads ahead into its
own buffer, where a select or a non-blocking read cannot see pending bytes.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
import weakref

from redis.connection import SSLConnection, parse_url

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
RETRY_SECONDS = 1.0
CONNECT_TIMEOUT = 2.0


def _command(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class SubscribeError(OSError):
    """Redis refused the subscription (wrong password, say)."""


class RevocationFeed:
    def __init__(self, redis_url: str, channel: str):
        self.channel = channel
        self.epoch = 0
        self._url = parse_url(redis_url)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stopped = False
        self._warned = False
        threading.Thread(target=_listen, args=(weakref.ref(self),), name="smsgw-revocations", daemon=True).start()

    # --- what requests ask

    def current(self) -> int | None:
        """The epoch a cached identity must carry to be trusted now, or None
        when this process cannot know whether it missed a change."""
        if self._sock is None:
            return None
        with self._lock:
            self._drain()
            return self.epoch if self._sock is not None else None

    def stop(self) -> None:
        self._stopped = True
        with self._lock:
            self._drop()

    # --- the subscription (every read and every state change under the lock)

    def _drain(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # closed by Redis (restart, timeout): stop trusting until resubscribed
            self._drop()
            return
        self.epoch += 1

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.epoch += 1

    def _subscribe(self) -> socket.socket:
        """A connected socket, subscribed and confirmed, with nothing read past the confirmation."""
        url = self._url
        if url.get("connection_class") is SSLConnection:
            # Not implemented: a TLS socket buffers inside the ssl object,
            # where the non-blocking read of current() would need other rules.
            raise SubscribeError("rediss:// is not supported here")
        if "path" in url:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = url["path"]
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in url.get("host", "") else socket.AF_INET)
            address = (url.get("host", "127.0.0.1"), int(url.get("port", 6379)))
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(address)
            request = b""
            expected = b""
            if url.get("password"):
                auth = [url["username"], url["password"]] if url.get("username") else [url["password"]]
                request += _command("AUTH", *auth)
                expected += b"+OK\r\n"
            request += _command("SUBSCRIBE", self.channel)
            raw = self.channel.encode()
            expected += b"*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n" % (len(raw), raw)
            sock.sendall(request)
            got = b""
            # Read exactly the expected answer: anything after it is a change
            # that the listener must see as such.
            while len(got) < len(expected):
                chunk = sock.recv(len(expected) - len(got))
                if not chunk:
                    raise ConnectionError("Redis closed the connection")
                got += chunk
                if not expected.startswith(got):
                    raise SubscribeError(f"Redis refused the subscription: {got[:80]!r}")
            sock.setblocking(False)
            return sock
        except BaseException:
            sock.close()
            raise

    def _connect_once(self) -> bool:
        try:
            sock = self._subscribe()
        except OSError as exc:
            if not self._warned:
                log.warning("credentials feed: cannot subscribe (%s); the auth cache is off until it can", exc)
                self._warned = True
            return False
        with self._lock:
            if self._stopped:
                sock.close()
                return False
            self._sock = sock
            self.epoch += 1  # whatever was cached before may predate a missed change
        if self._warned:
            log.warning("credentials feed: subscribed again; the auth cache is on")
            self._warned = False
        return True

    def _read(self, sock: socket.socket) -> None:
        with self._lock:
            if self._sock is sock:
                self._drain()

    def _heartbeat(self, sock: socket.socket) -> None:
        with self._lock:
            if self._sock is not sock:
                return
            try:
                sock.send(_command("PING"))
            except OSError:
                self._drop()

    def _give_up(self, sock: socket.socket) -> None:
        with self._lock:
            if self._sock is sock:
                log.warning("credentials feed: no answer from Redis; subscribing again")
                self._drop()


def _listen(ref: weakref.ref) -> None:
    """The listener thread (a greenlet under gevent): keeps the subscription
    and reads what arrives. It holds its feed only between waits, so it ends
    once the feed is stopped or its app is gone."""
    pinged = False  # a heartbeat is waiting for its answer
    while True:
        feed = ref()
        if feed is None or feed._stopped:
            return
        sock = feed._sock
        if sock is None:
            pinged = False
            if not feed._connect_once():
                del feed
                time.sleep(RETRY_SECONDS)
                continue
            sock = feed._sock
            if sock is None:
                continue
        before = feed.epoch
        del feed
        try:
            select.select([sock], [], [], HEARTBEAT_SECONDS)
        except (OSError, ValueError):
            pass  # closed meanwhile by a request's drain
        feed = ref()
        if feed is None:
            return
        feed._read(sock)
        if feed.epoch != before:  # heard something (here or in a request), or lost it
            pinged = False
        elif not pinged:
            # Nothing for a while: ask for an answer, and drop a connection
            # that gives none (a peer that vanished without closing it).
            feed._heartbeat(sock)
            pinged = True
        else:
            feed._give_up(sock)
            pinged = False
        del feed
