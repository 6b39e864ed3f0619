"""Logs keep hostile text (an SMS, a header) inside its own record: no forged
lines, no terminal escape sequences, in JSON and in plain-text mode."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

from smsgw_common import jsonlog

HOSTILE = "hi\n2026-01-01 00:00:00,000 api INFO smsgw_api.auth: admin logged in\r\x1b[2J\u2028end"


def _capture(json_lines: bool, emit) -> str:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        jsonlog.setup("test", "INFO", json_lines)
        handler = root.handlers[0]
        handler.stream = io.StringIO()
        emit(logging.getLogger("smsgw_test"))
        return handler.stream.getvalue()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_text_logs_escape_newlines_and_escape_sequences_in_a_message():
    out = _capture(False, lambda log: log.info("inbound from %s: %s", "+4917700000001", HOSTILE))
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert "\x1b" not in out and "\r" not in out and "\u2028" not in out
    assert "hi\\n2026-01-01" in lines[0] and "\\x1b[2J" in lines[0] and "\\u2028end" in lines[0]


def test_text_logs_mark_traceback_lines_so_no_message_can_imitate_them():
    def emit(log):
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            log.exception("failed")

    lines = _capture(False, emit).splitlines()
    assert lines[0].endswith("smsgw_test: failed")
    assert len(lines) > 1 and all(line.startswith("  | ") for line in lines[1:])
    assert "\x1b" not in "".join(lines)


def test_json_logs_keep_a_hostile_message_on_one_line():
    out = _capture(True, lambda log: log.warning("text %s", HOSTILE))
    assert len(out.splitlines()) == 1
    assert json.loads(out)["msg"] == f"text {HOSTILE}"


THREAD_DIES = """
import threading, time
from smsgw_common import jsonlog
jsonlog.setup("test-service")
jsonlog.exit_when_a_thread_dies()
def work():
    raise {exc}
threading.Thread(target=work, name="mqtt-loop").start()
time.sleep(5)
print("still running")
"""


def test_a_thread_that_dies_takes_the_service_down_with_a_logged_reason():
    proc = subprocess.run(
        [sys.executable, "-c", THREAD_DIES.format(exc="ConnectionResetError('peer reset')")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 70
    assert "still running" not in proc.stdout
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["level"] == "critical" and line["service"] == "test-service"
    assert line["msg"] == "thread mqtt-loop died; exiting so that the service is restarted"
    assert "ConnectionResetError: peer reset" in line["exc"]


def test_a_thread_that_exits_on_purpose_does_not():
    proc = subprocess.run(
        [sys.executable, "-c", THREAD_DIES.format(exc="SystemExit(0)")], capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "still running")
