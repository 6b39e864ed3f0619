"""A tiny JSON HTTP control server for an emulator run as a process (demo, stack).

Bound only to the address it is given (127.0.0.1 in tests and demos).
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .core import Emulator

log = logging.getLogger(__name__)


class _BadRequest(Exception):
    pass


def _field(body: dict, name: str, kind: type, default=None):
    value = body.get(name, default)
    if value is None:
        raise _BadRequest(f"'{name}' is required")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _BadRequest(f"'{name}' must be {kind.__name__}")
    return value


def make_handler(emu: Emulator):
    def inject(body):
        indexes = emu.inject_sms(_field(body, "sender", str), _field(body, "text", str))
        return {"stored": indexes}

    def fail(body):
        count = _field(body, "count", int, 1)
        code = _field(body, "code", int, 500)
        if count < 0:
            raise _BadRequest("'count' must not be negative")
        emu.fail_next_sends(count, cms_code=code)
        return {"failing": count, "code": code}

    def latency(body):
        seconds = _field(body, "seconds", float)
        if seconds < 0:
            raise _BadRequest("'seconds' must not be negative")
        emu.set_send_latency(seconds)
        return {"seconds": seconds}

    def hang(body):
        on = _field(body, "on", bool, True)
        emu.hang(on)
        return {"hung": on}

    def unplug(body):
        emu.unplug()
        return {"plugged": False}

    def replug(body):
        emu.replug()
        return {"plugged": True}

    posts = {
        "/inject": inject,
        "/fail": fail,
        "/latency": latency,
        "/hang": hang,
        "/unplug": unplug,
        "/replug": replug,
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            log.debug("control: " + fmt, *args)

        def _reply(self, status: int, payload) -> None:
            data = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self._reply(200, {"ok": True, "device": emu.device, "profile": emu.profile.name})
            elif self.path == "/sent":
                self._reply(200, list(emu.sent))
            else:
                self._reply(404, {"error": f"no such endpoint: GET {self.path}"})

        def do_POST(self):
            action = posts.get(self.path)
            if action is None:
                self._reply(404, {"error": f"no such endpoint: POST {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise _BadRequest("the body must be a JSON object")
                self._reply(200, action(body))
            except json.JSONDecodeError as exc:
                self._reply(400, {"error": f"invalid JSON: {exc}"})
            except (_BadRequest, ValueError) as exc:
                self._reply(400, {"error": str(exc)})

    return Handler


def serve(emu: Emulator, host: str, port: int) -> ThreadingHTTPServer:
    """Start the control server on a background thread; call .shutdown() to stop."""
    server = ThreadingHTTPServer((host, port), make_handler(emu))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="emulator-control", daemon=True).start()
    return server
