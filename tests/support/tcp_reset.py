"""A TCP relay on 127.0.0.1 to one upstream that can end every connection it
relays with a reset (RST), the way a NAT that forgot the flow or a peer that
rebooted ends one: the client's next read fails with ECONNRESET, which a
clean close (a stopped broker) never gives; the upstream sees its side
closed. `close` stops it."""

from __future__ import annotations

import select
import socket
import struct
import threading

from .ports import accept_relayed


class ResettingRelay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._live: list[tuple[threading.Event, threading.Thread]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        accept_relayed(self.listener, self.upstream, self._closed, self._start_relay)

    def _start_relay(self, client: socket.socket, server: socket.socket) -> None:
        cut = threading.Event()
        thread = threading.Thread(target=self._relay, args=(client, server, cut), daemon=True)
        with self._lock:
            self._live.append((cut, thread))
            self.accepted += 1
        thread.start()

    @staticmethod
    def _relay(client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        # One thread owns both sockets, so that its close is the last one and
        # the RST leaves at once (a close while another thread sits in recv
        # on the socket would not send it).
        try:
            while not cut.is_set():
                readable, _, _ = select.select([client, server], [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (server if sock is client else client).sendall(data)
        except OSError:
            pass
        finally:
            if cut.is_set():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            server.close()

    def reset(self) -> int:
        """Abort every relayed connection with a RST to its client; how many there were."""
        with self._lock:
            live, self._live = self._live, []
        for cut, _ in live:
            cut.set()
        for _, thread in live:
            thread.join(5)
        return sum(1 for _, thread in live if not thread.is_alive())

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        self.reset()
