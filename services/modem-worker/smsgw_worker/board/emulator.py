"""An emulated seed board: a small MQTT client that behaves like the seed's
ESP32 boards (docs/boards.md), for tests and the demo profile.

It subscribes to its `sms/send/<number>`, answers each message on
`/sms/status` with the configured status words after the configured delay,
and publishes `/sms/receive` for an injected SMS. Faults: `silent` (never
answers) and `twice` (every status published twice).

    python -m smsgw_worker.board.emulator --number +4915112345678 \\
        [--delay 0.5] [--words sent,delivered] [--fault silent|twice] \\
        [--root ROOT] [--control 127.0.0.1:8931]

Broker: MQTT_HOST, MQTT_PORT, BOARD_MQTT_USERNAME and BOARD_MQTT_PASSWORD
(or BOARD_MQTT_PASSWORD_FILE); no user means an anonymous connection. The
optional control server takes `POST /inject {"sender", "text"}`,
`POST /configure {"delay", "words", "fault"}` and `GET /sent`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from smsgw_common.settings import SettingsError, env_int, env_secret, env_str, env_value

from .protocol import SeedTopics, digits

log = logging.getLogger(__name__)

FAULTS = ("none", "silent", "twice")


class EmulatedBoard:
    def __init__(
        self,
        number: str,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        username: str | None = None,
        password: str | None = None,
        root: str = "",
        delay: float = 0.1,
        words: Sequence[str] = ("sent", "delivered"),
        fault: str = "none",
    ) -> None:
        self.number = "+" + digits(number)
        self.topics = SeedTopics(root)
        self.host, self.port = host, port
        self.lock = threading.Lock()
        self.sent: list[dict[str, Any]] = []  # what the gateway handed over, in order
        self.stopped = threading.Event()
        self.configure(delay=delay, words=words, fault=fault)
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"board-{digits(number)}-{secrets.token_hex(3)}", clean_session=True
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def configure(
        self, *, delay: float | None = None, words: Sequence[str] | None = None, fault: str | None = None
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        with self.lock:
            if delay is not None:
                self.delay = max(0.0, float(delay))
            if words is not None:
                self.words = [str(w) for w in words]
            if fault is not None:
                self.fault = fault

    def start(self, timeout: float = 10.0) -> EmulatedBoard:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise TimeoutError(f"board {self.number}: no connection to {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("board %s: connection refused: %s", self.number, reason_code)
            return
        # QoS 1, as the seed's boards subscribe.
        client.subscribe(self.topics.send(self.number), qos=1)
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            log.warning("board %s: unreadable send payload dropped", self.number)
            return
        with self.lock:
            self.sent.append(payload)
            delay, words, fault = self.delay, list(self.words), self.fault
        if fault == "silent":
            return
        statuses = [
            {
                "message_id": payload.get("message_id"),
                "sender_number": self.number,
                "receiver_number": payload.get("number"),
                "message": payload.get("message"),
                "status": word,
            }
            for word in words
        ]
        # One thread per send, so a board's words go out in the order it says them
        # (one timer per word could fire out of order on a loaded machine).
        repeat = 2 if fault == "twice" else 1
        threading.Thread(target=self._answer, args=(statuses, delay, repeat), daemon=True).start()

    def _answer(self, statuses: list[dict[str, Any]], delay: float, repeat: int) -> None:
        for status in statuses:
            if self.stopped.wait(delay):
                return
            for _ in range(repeat):
                self._publish(self.topics.status(), status)

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(payload).encode(), qos=1)

    # -- what a test or the control server does ----------------------------------
    def inject(self, sender: str, text: str, receiver: str | None = None) -> None:
        """An SMS from `sender` arriving on this board's SIM."""
        payload = {"sender_number": sender, "receiver_number": receiver or self.number, "message": text}
        self.client.publish(self.topics.receive(), json.dumps(payload).encode(), qos=1).wait_for_publish(5)

    def report(self, message_id: object, word: str, sender_number: str | None = None) -> None:
        """A status of this board's own making (say, for another SIM's number)."""
        payload = {
            "message_id": message_id,
            "sender_number": sender_number or self.number,
            "receiver_number": None,
            "message": None,
            "status": word,
        }
        self.client.publish(self.topics.status(), json.dumps(payload).encode(), qos=1).wait_for_publish(5)

    def handed_over(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.sent)


def serve_control(board: EmulatedBoard, host: str, port: int) -> ThreadingHTTPServer:
    """The control server of the demo board (bind it to 127.0.0.1 or a private network)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/sent":
                self._answer(200, board.handed_over())
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            try:
                length = min(int(self.headers.get("Content-Length") or 0), 65536)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/inject":
                    board.inject(str(body["sender"]), str(body["text"]))
                elif self.path == "/configure":
                    words = body.get("words")
                    board.configure(delay=body.get("delay"), words=words, fault=body.get("fault"))
                else:
                    self._answer(404, {"error": "not found"})
                    return
            except (ValueError, KeyError, TypeError) as exc:
                self._answer(400, {"error": str(exc)})
                return
            self._answer(200, {"ok": True})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="board-control").start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smsgw_worker.board.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--number", default=os.environ.get("BOARD_NUMBER"), help="the SIM's number (BOARD_NUMBER)")
    parser.add_argument("--root", default=os.environ.get("BOARD_TOPIC_ROOT", ""), help="topic root (BOARD_TOPIC_ROOT)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds before each status word")
    parser.add_argument("--words", default="sent,delivered", help="status words to answer with, in order")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--control", default="", help="host:port of the control server (none by default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.number or not digits(args.number):
        print("board emulator: --number (or BOARD_NUMBER) is required", file=sys.stderr)
        return 2
    try:
        username = env_value("BOARD_MQTT_USERNAME")
        password = env_secret("BOARD_MQTT_PASSWORD", required=True) if username else None
        host, port = env_str("MQTT_HOST", "127.0.0.1"), env_int("MQTT_PORT", 1883)
    except SettingsError as exc:
        print(f"board emulator: configuration error: {exc}", file=sys.stderr)
        return 2
    board = EmulatedBoard(
        args.number,
        host=host,
        port=port,
        username=username,
        password=password,
        root=args.root,
        delay=args.delay,
        words=[w for w in args.words.split(",") if w],
        fault=args.fault,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        board.start(timeout=30)
    except (OSError, TimeoutError) as exc:
        print(f"board emulator: cannot connect: {exc}", file=sys.stderr)
        return 1
    server = None
    if args.control:
        chost, _, cport = args.control.rpartition(":")
        server = serve_control(board, chost or "127.0.0.1", int(cport))
    log.info("emulated board %s on %s:%s (root %r)", board.number, host, port, args.root)
    # The image's health check reads the worker's heartbeat file: here it
    # says the board is connected to the broker.
    heartbeat = os.environ.get("WORKER_HEARTBEAT_FILE", "")
    while True:
        if heartbeat and board.client.is_connected():
            try:
                with open(heartbeat, "a"):
                    os.utime(heartbeat)
            except OSError as exc:
                log.warning("cannot touch the heartbeat file %s: %s", heartbeat, exc)
        if stop.wait(10):
            break
    if server is not None:
        server.shutdown()
    board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
