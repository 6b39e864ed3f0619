"""A TCP proxy in front of Postgres that can cut the connection at one COMMIT.

Either the server gets the COMMIT and commits, and the client sees the
connection close before the answer ("server closed the connection
unexpectedly"), so it cannot tell whether its transaction took; or the
COMMIT never reaches the server, which rolls the transaction back. That is
what a database that dies, or a link that drops, at the moment of a commit
does; a stopped server cannot be timed to it.

Reads the client's side of the protocol to find the COMMIT, so clients must
connect without TLS (`sslmode=disable`). Bound to 127.0.0.1 on a free port;
`close` stops it.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from .ports import accept_relayed


class CommitLosingProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        port = self.listener.getsockname()[1]
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        query = "&".join(filter(None, [parts.query, "sslmode=disable"]))
        self.url = urlunsplit(
            (parts.scheme, f"{netloc[0]}@{host}" if len(netloc) == 2 else host, parts.path, query, "")
        )
        # Cut the first COMMIT of a transaction that ran a statement
        # containing `after` (set by `arm`), after or instead of forwarding it.
        self._after: bytes | None = None
        self._forward = True
        self.cut_commits = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def arm(self, after: bytes, *, forward: bool = True) -> None:
        """forward: the server commits and only its answer is lost; else the
        COMMIT is lost too (the transaction rolls back)."""
        self._after, self._forward = after, forward

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        accept_relayed(self.listener, self.upstream, self._stop, self._relay)

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        muted = threading.Event()
        self._spawn(self._pump_answers, server, client, muted)
        self._spawn(self._pump_requests, client, server, muted)

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _pump_requests(self, client: socket.socket, server: socket.socket, muted: threading.Event) -> None:
        seen = False
        try:
            (length,) = struct.unpack("!I", self._read(client, 4))  # the startup message has no type byte
            server.sendall(struct.pack("!I", length) + self._read(client, length - 4))
            while not self._stop.is_set():
                head = self._read(client, 5)
                body = self._read(client, struct.unpack("!I", head[1:])[0] - 4)
                after = self._after
                if head[:1] == b"Q" and after is not None:
                    if after in body:
                        seen = True
                    elif seen and body.rstrip(b"\0").strip().upper() == b"COMMIT":
                        self._after = None
                        # A synchronous client has had every earlier answer: what comes now is the COMMIT's.
                        muted.set()
                        if self._forward:
                            server.sendall(head + body)
                            time.sleep(0.3)  # the server commits; its answer never reaches the client
                        self.cut_commits += 1
                        raise ConnectionError("cut")
                server.sendall(head + body)
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            for sock in (client, server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    @staticmethod
    def _pump_answers(server: socket.socket, client: socket.socket, muted: threading.Event) -> None:
        try:
            while chunk := server.recv(65536):
                if not muted.is_set():
                    client.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=2)
