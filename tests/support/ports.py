"""Ports for the servers a test starts itself (a private Redis or Postgres it
may kill): a free one in a range, so that runs side by side do not meet.
SMSGW_TEST_PORTS ("low-high") overrides each caller's default range."""

from __future__ import annotations

import os
import socket


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
