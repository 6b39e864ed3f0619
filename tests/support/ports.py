"""Ports for the servers a test starts itself (a private Redis or Postgres it
may kill): a free one in a range, so that runs side by side do not meet.
SMSGW_TEST_PORTS ("low-high") overrides each caller's default range."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable


def port_range(default: str) -> range:
    low, _, high = os.environ.get("SMSGW_TEST_PORTS", default).partition("-")
    return range(int(low), int(high) + 1)


def free_port(default: str) -> int:
    ports = port_range(default)
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} (SMSGW_TEST_PORTS)")


def accept_relayed(
    listener: socket.socket,
    upstream: tuple[str, int],
    stopped: threading.Event,
    on_pair: Callable[[socket.socket, socket.socket], None],
) -> None:
    """The accept loop of a test's TCP relay: until `stopped` (or the listener
    is closed), connect each client to `upstream` and hand both sockets,
    blocking, to `on_pair`. The listener needs a timeout, so `stopped` is seen."""
    while not stopped.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        server = socket.create_connection(upstream, timeout=10)
        server.settimeout(None)
        on_pair(client, server)
