"""A tiny JSON HTTP control server for an emulator run as a process (demo, stack).

Bound only to the address it is given (127.0.0.1 in tests and demos).
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .core import MEMORIES, Emulator

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


def _optional(body: dict, name: str, kind: type):
    return None if body.get(name) is None else _field(body, name, kind)


def make_handler(emu: Emulator):
    def inject(body):
        """An SMS from the network: {"sender", "text"} (with "multipart_order",
        "concat_ref") or a raw {"pdu"}; "store": false follows AT+CNMI (+CMT)."""
        store = _field(body, "store", bool, True)
        if body.get("pdu") is not None:
            raw = "".join(_field(body, "pdu", str).split())
            try:
                bytes.fromhex(raw)
            except ValueError:
                raise _BadRequest("'pdu' must be hex") from None
            if not raw:
                raise _BadRequest("'pdu' must not be empty")
            return {"stored": emu.inject_pdu(raw, store=store)}
        order = _optional(body, "multipart_order", list)
        if order is not None and not all(isinstance(n, int) and not isinstance(n, bool) for n in order):
            raise _BadRequest("'multipart_order' must be a list of part numbers")
        indexes = emu.inject_sms(_field(body, "sender", str), _field(body, "text", str), multipart_order=order,
                                 store=store, concat_ref=_optional(body, "concat_ref", int))
        return {"stored": indexes}

    def inject_report(body):
        mr, status = _field(body, "mr", int), _field(body, "status", int, 0)
        if not 0 <= mr <= 255 or not 0 <= status <= 255:
            raise _BadRequest("'mr' and 'status' must be 0..255")
        index = emu.inject_status_report(mr, _field(body, "recipient", str), status,
                                         store=_field(body, "store", bool, False))
        return {"stored": index}

    def garbage(body):
        n = _field(body, "bytes", int, 32)
        if not 1 <= n <= 4096:
            raise _BadRequest("'bytes' must be 1..4096")
        return {"sent": len(emu.emit_garbage(n))}

    def fill_storage(body):
        memory = _optional(body, "memory", str)
        if memory is not None and memory not in MEMORIES:
            raise _BadRequest(f"'memory' must be one of {', '.join(MEMORIES)}")
        emu.fill_storage(memory)
        return {"full": memory or "receive storage"}

    def sim(body):
        present = _field(body, "present", bool)
        emu.insert_sim() if present else emu.remove_sim()
        return {"present": present}

    def lose_references(body):
        count = _field(body, "count", int, 1)
        final = _field(body, "final", str, "OK")
        if count < 0:
            raise _BadRequest("'count' must not be negative")
        if not final or any(ch in final for ch in "\r\n"):
            raise _BadRequest("'final' must be one line")
        emu.lose_next_references(count, final)
        return {"losing": count, "final": final}

    def direct_delivery(body):
        on = _field(body, "on", bool, True)
        emu.set_direct_delivery(on)
        return {"direct": on}

    def signal(body):
        rssi = _field(body, "rssi", int)
        if not (0 <= rssi <= 31 or rssi == 99):
            raise _BadRequest("'rssi' must be 0..31 or 99")
        emu.set_signal(rssi)
        return {"rssi": rssi}

    def registration(body):
        stat = _field(body, "stat", int)
        if not 0 <= stat <= 7:
            raise _BadRequest("'stat' must be 0..7")
        emu.set_registration(stat)
        return {"stat": stat}

    def report_status(body):
        status = _field(body, "status", int)
        if not 0 <= status <= 255:
            raise _BadRequest("'status' must be 0..255")
        emu.set_report_status(status)
        return {"status": status}

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
        "/inject-report": inject_report,
        "/garbage": garbage,
        "/fill-storage": fill_storage,
        "/sim": sim,
        "/lose-references": lose_references,
        "/direct-delivery": direct_delivery,
        "/signal": signal,
        "/registration": registration,
        "/report-status": report_status,
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
            elif self.path == "/stored":
                self._reply(200, [{k: m[k] for k in ("memory", "index", "status", "pdu")}
                                  for m in emu.stored_messages()])
            elif self.path == "/direct":
                self._reply(200, list(emu.direct_deliveries))
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
