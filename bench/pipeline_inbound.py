"""Inbound SMS from the emulated modem to a Socket.IO client: p50/p99.
Target: p99 < 100 ms.

    .venv/bin/python bench/pipeline_inbound.py [--count 200]

The clock starts when the emulator is told to deliver the SMS (its control
API, before the modem's +CMTI) and stops when `sms_received` reaches a
python-socketio client connected over WebSocket to the API under gunicorn.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import requests
import socketio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_common import Stack, percentile


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--gap", type=float, default=0.1, help="seconds between messages")
    args = ap.parse_args()

    stack = Stack("inbound")
    (worker,) = stack.add_workers(1)
    arrived: dict[str, float] = {}
    got = threading.Condition()
    sio = socketio.Client(reconnection=False)

    @sio.on("sms_received")
    def on_received(data):
        with got:
            arrived[data["message"]] = time.time()
            got.notify_all()

    sio.connect(stack.base, auth={"api_key": stack.api_key}, transports=["websocket"], wait_timeout=10)
    control = requests.Session()
    latencies = []
    for i in range(args.warmup + args.count):
        text = f"inbound bench {i}"
        t0 = time.time()
        control.post(worker["control"] + "/inject", json={"sender": "+4917612345678", "text": text}, timeout=5)
        with got:
            if not got.wait_for(lambda text=text: text in arrived, timeout=10):
                raise SystemExit(f"sms_received for {text!r} never came")
        if i >= args.warmup:
            latencies.append((arrived[text] - t0) * 1000)
        time.sleep(args.gap)
    sio.disconnect()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"inbound SMS emulator -> Socket.IO sms_received, n={len(latencies)}")
    print(
        f"  p50 {p50:.1f} ms   p90 {percentile(latencies, 90):.1f} ms   p99 {p99:.1f} ms   max {max(latencies):.1f} ms"
    )
    print(f"  target p99 < 100 ms: {'PASS' if p99 < 100 else 'FAIL'}")
    stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
