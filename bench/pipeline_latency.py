"""Latency from `POST /api/sms` returning to the AT+CMGS bytes reaching a
zero-latency emulated modem, at low load (one message at a time).

    .venv/bin/python bench/pipeline_latency.py [--count 200]

Target: p50 < 15 ms, p99 < 50 ms. The emulator stamps each AT+CMGS with the
wall clock (same machine, same clock as this script).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_common import Stack, percentile, wait_until


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument(
        "--gap", type=float, default=0.5, help="seconds between messages (low load: a real modem needs seconds per SMS)"
    )
    args = ap.parse_args()

    stack = Stack("latency")
    stamps = stack.tmp / "cmgs.stamps"
    stamps.touch()
    stack.add_workers(1, EMU_SEND_LATENCY=0, EMU_STAMP_FILE=stamps)

    def lines() -> list[float]:
        return [float(x) for x in stamps.read_text().split()]

    # Where the time goes: when the outbox wake-up reaches an MQTT subscriber.
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    wakeups: dict[int, float] = {}
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{secrets.token_hex(3)}")
    sub.on_message = lambda c, u, m: wakeups.setdefault(json.loads(m.payload)["message_id"], time.time())
    sub.connect("127.0.0.1", 1883)
    sub.subscribe(stack.env["MQTT_PREFIX"] + "modems/+/outbox", qos=1)
    sub.loop_start()
    time.sleep(0.5)

    # No polling while measuring (it would steal CPU from the worker on a
    # small box): one message per gap, and the stamps are matched afterwards,
    # in order, since only one message is in flight at a time.
    returned_at, ids = [], []
    for i in range(args.warmup + args.count):
        resp = stack.http.post(
            stack.base + "/api/sms",
            json={"recipient": f"+4917{secrets.randbelow(10**8):08d}", "message": f"bench {i}"},
            timeout=10,
        )
        returned_at.append(time.time())
        if resp.status_code != 200:
            raise SystemExit(f"POST /api/sms answered {resp.status_code}: {resp.text}")
        ids.append(resp.json()["message_id"])
        time.sleep(args.gap)
    stamped = wait_until(lambda: (s := lines()) and len(s) >= len(ids) and s, 30, "every AT+CMGS")
    latencies, to_wakeup = [], []
    for i in range(args.warmup, len(ids)):
        latencies.append((stamped[i] - returned_at[i]) * 1000)
        if ids[i] in wakeups:
            to_wakeup.append((wakeups[ids[i]] - returned_at[i]) * 1000)
    if len(stamped) != len(ids):
        print(f"warning: {len(stamped)} AT+CMGS for {len(ids)} messages; pairing may be off")

    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"pipeline latency POST /api/sms returned -> AT+CMGS at the modem, n={len(latencies)}")
    print(
        f"  p50 {p50:.1f} ms   p90 {percentile(latencies, 90):.1f} ms   p99 {p99:.1f} ms   "
        f"max {max(latencies):.1f} ms   min {min(latencies):.1f} ms"
    )
    print(
        f"  of which POST returned -> outbox wake-up at an MQTT subscriber: p50 {percentile(to_wakeup, 50):.1f} ms"
        f"  p99 {percentile(to_wakeup, 99):.1f} ms (n={len(to_wakeup)})"
    )
    print(f"  target p50 < 15 ms: {'PASS' if p50 < 15 else 'FAIL'};  p99 < 50 ms: {'PASS' if p99 < 50 else 'FAIL'}")
    stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
