"""Structured logs: one JSON object per line on stdout.

`request_id` and `message_id` ride along in a context variable so that a
message can be followed from the API request to the modem.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime

# The default is never mutated: bind() always sets a new dict.
context: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar("log_context", default={})  # noqa: B039

_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def bind(**fields: object) -> contextvars.Token[dict[str, object]]:
    return context.set({**context.get(), **{k: v for k, v in fields.items() if v is not None}})


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(context.get())
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # json escapes C0 controls; C1 and the Unicode line separators it
        # leaves as they are, and some line readers split on them.
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(out, default=str, ensure_ascii=False))


# C0/C1 controls and the Unicode line separators: a newline in an SMS text
# must not start a forged log line, nor an escape sequence drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """Plain-text lines (LOG_JSON=false): one record is one line; a
    traceback follows on lines marked "  | " that no message can imitate."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            line = escape_controls(super().format(record))
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            line += "".join("\n  | " + escape_controls(part) for part in block.splitlines())
        return line


def setup(service: str, level: str | None = "INFO", json_lines: bool = True) -> None:
    """Log to stdout; an empty or missing level is INFO (an env file's `LOG_LEVEL=`)."""
    handler = logging.StreamHandler(sys.stdout)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or "").strip().upper() or "INFO")


def exit_when_a_thread_dies(code: int = 70) -> None:
    """In a long-running service, a thread that ends on an uncaught exception
    is logged and the process exits (70, EX_SOFTWARE), so that Compose
    restarts it. By default Python prints the traceback and carries on: a
    dead MQTT thread left the collector publishing nothing, for good, while
    its process looked healthy."""

    def on_thread_death(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        logging.getLogger(__name__).critical(
            "thread %s died; exiting so that the service is restarted",
            name,
            exc_info=args.exc_value,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)

    threading.excepthook = on_thread_death
