"""A tiny JSON HTTP control server for an emulator run as a process (demo, stack).

Bound only to the address it is given (127.0.0.1 in tests and demos).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from .emulator import Emulator
from .state import MEMORIES

log = logging.getLogger(__name__)

T = TypeVar("T")
Body = dict[str, Any]  # a request's JSON object
Reply = dict[str, Any]  # the JSON object answered


class _BadRequest(Exception):
    pass


def _field(body: Body, name: str, kind: type[T], default: T | None = None) -> T:
    value: Any = body.get(name, default)
    if value is None:
        raise _BadRequest(f"'{name}' is required")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _BadRequest(f"'{name}' must be {kind.__name__}")
    return value


def _optional(body: Body, name: str, kind: type[T]) -> T | None:
    return None if body.get(name) is None else _field(body, name, kind)


def make_handler(emu: Emulator) -> type[BaseHTTPRequestHandler]:
    def inject(body: Body) -> Reply:
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
        indexes = emu.inject_sms(
            _field(body, "sender", str),
            _field(body, "text", str),
            multipart_order=order,
            store=store,
            concat_ref=_optional(body, "concat_ref", int),
        )
        return {"stored": indexes}

    def inject_report(body: Body) -> Reply:
        mr, status = _field(body, "mr", int), _field(body, "status", int, 0)
        if not 0 <= mr <= 255 or not 0 <= status <= 255:
            raise _BadRequest("'mr' and 'status' must be 0..255")
        index = emu.inject_status_report(
            mr, _field(body, "recipient", str), status, store=_field(body, "store", bool, False)
        )
        return {"stored": index}

    def garbage(body: Body) -> Reply:
        n = _field(body, "bytes", int, 32)
        if not 1 <= n <= 4096:
            raise _BadRequest("'bytes' must be 1..4096")
        return {"sent": len(emu.emit_garbage(n))}

    def fill_storage(body: Body) -> Reply:
        memory = _optional(body, "memory", str)
        if memory is not None and memory not in MEMORIES:
            raise _BadRequest(f"'memory' must be one of {', '.join(MEMORIES)}")
        emu.fill_storage(memory)
        return {"full": memory or "receive storage"}

    def sim(body: Body) -> Reply:
        present = _field(body, "present", bool)
        emu.insert_sim() if present else emu.remove_sim()
        return {"present": present}

    def lose_references(body: Body) -> Reply:
        count = _field(body, "count", int, 1)
        final = _field(body, "final", str, "OK")
        if count < 0:
            raise _BadRequest("'count' must not be negative")
        if not final or any(ch in final for ch in "\r\n"):
            raise _BadRequest("'final' must be one line")
        emu.lose_next_references(count, final)
        return {"losing": count, "final": final}

    def direct_delivery(body: Body) -> Reply:
        on = _field(body, "on", bool, True)
        emu.set_direct_delivery(on)
        return {"direct": on}

    def signal(body: Body) -> Reply:
        rssi = _field(body, "rssi", int)
        if not (0 <= rssi <= 31 or rssi == 99):
            raise _BadRequest("'rssi' must be 0..31 or 99")
        emu.set_signal(rssi)
        return {"rssi": rssi}

    def registration(body: Body) -> Reply:
        stat = _field(body, "stat", int)
        if not 0 <= stat <= 7:
            raise _BadRequest("'stat' must be 0..7")
        emu.set_registration(stat)
        return {"stat": stat}

    def report_status(body: Body) -> Reply:
        status = _field(body, "status", int)
        if not 0 <= status <= 255:
            raise _BadRequest("'status' must be 0..255")
        emu.set_report_status(status)
        return {"status": status}

    def fail(body: Body) -> Reply:
        count = _field(body, "count", int, 1)
        code = _field(body, "code", int, 500)
        if count < 0:
            raise _BadRequest("'count' must not be negative")
        emu.fail_next_sends(count, cms_code=code)
        return {"failing": count, "code": code}

    def latency(body: Body) -> Reply:
        seconds = _field(body, "seconds", float)
        if seconds < 0:
            raise _BadRequest("'seconds' must not be negative")
        emu.set_send_latency(seconds)
        return {"seconds": seconds}

    def hang(body: Body) -> Reply:
        """{"on", "mode": "swallow"|"late", "seconds" (ends by itself), "next_send" (starts at the next PDU)}."""
        on = _field(body, "on", bool, True)
        mode = _field(body, "mode", str, "swallow")
        if mode not in ("swallow", "late"):
            raise _BadRequest("'mode' must be 'swallow' or 'late'")
        seconds = _optional(body, "seconds", float)
        if seconds is not None and not 0 < seconds <= 600:
            raise _BadRequest("'seconds' must be 0..600")
        if _field(body, "next_send", bool, False):
            if seconds is None:
                raise _BadRequest("'next_send' needs 'seconds'")
            emu.hang_on_next_send(seconds, mode)
            return {"hung": False, "on_next_send": seconds, "mode": mode}
        if seconds is not None and on:
            emu.hang_for(seconds, mode)
        else:
            emu.hang(on, mode)
        return {"hung": on, "mode": mode, "seconds": seconds}

    def unplug(body: Body) -> Reply:
        emu.unplug()
        return {"plugged": False}

    def replug(body: Body) -> Reply:
        """{"name"}: come back under another name beside the current link
        (ttyUSB0 -> ttyUSB1); only a bare name, never a path, so the control
        server cannot be made to replace a file elsewhere. {"new_node": true}:
        back under another device node, the link following."""
        name = _optional(body, "name", str)
        link = None
        if name is not None:
            if emu.link is None:
                raise _BadRequest("'name' needs an emulator started with a link")
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) or name in (".", ".."):
                raise _BadRequest("'name' must be a bare file name (letters, digits, '.', '_', '-')")
            link = os.path.join(os.path.dirname(emu.link), name)
            if os.path.lexists(link) and not os.path.islink(link):
                raise _BadRequest(f"{name!r} exists and is not a link")
        emu.replug(link, new_node=_field(body, "new_node", bool, False))
        return {"plugged": True, "device": emu.device, "node": emu.node}

    def quirk(body: Body) -> Reply:
        """A behaviour recorded from a real device: {"name", "on"} (profiles.QUIRKS)."""
        name, on = _field(body, "name", str), _field(body, "on", bool, True)
        emu.set_quirk(name, on)
        return {"quirk": name, "on": on}

    def call(body: Body) -> Reply:
        """An incoming voice call: {"number" (null: withheld), "rings", "interval"}."""
        number = _optional(body, "number", str)
        rings = _field(body, "rings", int, 5)
        interval = _field(body, "interval", float, 1.0)
        if not 1 <= rings <= 50 or not 0.05 <= interval <= 10:
            raise _BadRequest("'rings' must be 1..50 and 'interval' 0.05..10")
        emu.incoming_call(number, rings, interval)
        return {"ringing": number}

    def reboot(body: Body) -> Reply:
        """{} now, or {"next_send": true}: at the next AT+CMGS, before its prompt."""
        if _field(body, "next_send", bool, False):
            emu.reboot_on_next_send()
            return {"rebooted": False, "on_next_send": True}
        emu.reboot()
        return {"rebooted": True}

    def smsc(body: Body) -> Reply:
        number = _field(body, "number", str, "")
        emu.set_smsc(number)
        return {"smsc": number}

    posts: dict[str, Callable[[Body], Reply]] = {
        "/quirk": quirk,
        "/call": call,
        "/reboot": reboot,
        "/smsc": smsc,
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
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control: " + format, *args)

        def _reply(self, status: int, payload: object) -> None:
            data = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(
                    200,
                    {"ok": True, "device": emu.device, "profile": emu.profile.name, "quirks": sorted(emu.quirks)},
                )
            elif self.path == "/sent":
                self._reply(200, list(emu.sent))
            elif self.path == "/stored":
                self._reply(
                    200, [{k: m[k] for k in ("memory", "index", "status", "pdu")} for m in emu.stored_messages()]
                )
            elif self.path == "/direct":
                self._reply(200, list(emu.direct_deliveries))
            else:
                self._reply(404, {"error": f"no such endpoint: GET {self.path}"})

        def do_POST(self) -> None:
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
