"""A TCP relay on 127.0.0.1 to one upstream that can end every connection it
relays with a reset (RST), the way a NAT that forgot the flow or a peer that
rebooted ends one: the client's next read fails with ECONNRESET, which a
clean close (a stopped broker) never gives. `close` stops it."""

from __future__ import annotations

import socket
import struct
import threading


class ResettingRelay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
            with self._lock:
                self._clients.append(client)
                self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset(self) -> int:
        """Abort every client connection with a RST; how many there were."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        return len(clients)

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        self.reset()
