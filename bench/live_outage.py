"""What holding live events through a Redis outage costs (core/livefeed.py).

    .venv/bin/python bench/live_outage.py [--events 1000] [--subscribers 2]

A redis-server of its own (a port of SMSGW_TEST_PORTS), `--subscribers`
plain Redis subscribers standing in for API processes, and the API's
LiveFeed in this process, emitting `sms_status_update` payloads of the usual
size. In one run:

1. baseline: `--events` events published with Redis up (events/s);
2. Redis killed: the same number emitted and held (time per emit, and the
   memory the held events take, by tracemalloc);
3. Redis started again: seconds from its first answer until every held event
   was published, and how many each subscriber got, in order;
4. one more than the bound: the events are dropped and each audience gets
   one `live_resync`.

Prints the figures, the ratio of the flush rate to the baseline, and the
machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import redis as redis_lib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.private_redis import PrivateRedis  # noqa: E402  (the tests' own redis-server)

from smsgw_api.core.livefeed import LiveFeed, Publisher  # noqa: E402

CHANNEL = "bench-live/socketio"


def payload(i: int) -> dict:
    # The fields and sizes of a real sms_status_update (pipeline/events.py).
    return {
        "message_id": 100000 + i,
        "id": 100000 + i,
        "status": "delivered",
        "state": "delivered",
        "direction": "outbound",
        "sender_number": "+491510000001",
        "receiver_number": "+491701234567",
        "message": "Your parcel 4711-0815 arrives today between 10:00 and 12:00. Reply STOP to opt out." + str(i),
        "sim_card_id": 3,
        "modem_id": "modem-usb-1",
        "segments": 1,
        "timestamp": "2026-12-07T01:00:00.000000+00:00",
        "error_code": None,
        "error_text": None,
    }


class Subscriber(threading.Thread):
    """An API process's listener, reduced to counting what it receives."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.seqs: list[int] = []
        self.resyncs = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                pubsub = redis_lib.Redis.from_url(self.url).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                while not self.stopping.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg and msg["type"] == "message":
                        body = json.loads(msg["data"])
                        data = body["data"][0]
                        if body["event"] == "sms_status_update":
                            self.seqs.append(data["feed"]["seq"])
                        elif body["event"] == "live_resync":
                            self.resyncs += 1
            except redis_lib.RedisError:
                time.sleep(0.5)  # what live/socketio.py Listener does


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=2)
    args = parser.parse_args()
    n = args.events
    redis = PrivateRedis().start()
    subs = [Subscriber(redis.url) for _ in range(args.subscribers)]
    try:
        for s in subs:
            s.start()
        probe = redis_lib.Redis.from_url(redis.url)
        wait(lambda: probe.pubsub_numsub(CHANNEL)[0][1] == len(subs), 10)
        feed = LiveFeed(lambda: Publisher(redis.url, CHANNEL), capacity=n, heartbeat_every=1.0)

        t0 = time.perf_counter()
        for i in range(n):
            feed.emit("sms_status_update", payload(i))
        base_s = time.perf_counter() - t0
        assert wait(lambda: all(len(s.seqs) == n for s in subs), 30), "baseline events not all received"

        redis.kill()
        feed.emit("sms_status_update", payload(-1))  # the one that finds Redis gone
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        t0 = time.perf_counter()
        for i in range(n - 1):
            feed.emit("sms_status_update", payload(n + i))
        held_s = time.perf_counter() - t0
        after, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        held = feed.held

        redis.start()
        back = time.perf_counter()
        flushed = wait(lambda: all(len(s.seqs) == 2 * n for s in subs), 60)
        flush_s = time.perf_counter() - back
        in_order = all(s.seqs == list(range(1, 2 * n + 1)) for s in subs)

        redis.kill()
        for i in range(n + 1):
            feed.emit("sms_status_update", payload(3 * n + i))
        redis.start()
        resynced = wait(lambda: all(s.resyncs == 3 for s in subs), 60)  # viewer, user, admin

        load = os.getloadavg()
        print(f"events per phase: {n}, subscribers (API processes): {len(subs)}")
        print(f"baseline, Redis up:   {n / base_s:9.0f} events/s published")
        print(f"Redis down, held:     {held_s / (n - 1) * 1e6:9.1f} us per emit, {held} held")
        held_kib, per_event = (after - before) / 1024, (after - before) / max(held, 1)
        print(f"memory held:          {held_kib:9.0f} KiB ({per_event:.0f} B/event)")
        print(f"flush after return:   {flush_s:9.2f} s to deliver {n} held events to every subscriber")
        rate, ratio = n / flush_s, (n / flush_s) / (n / base_s)
        print(f"                      {rate:9.0f} events/s incl. re-subscribe wait; ratio to baseline {ratio:.2f}")
        print(f"all delivered, in order, once: {flushed and in_order}")
        print(f"past the bound ({n + 1} events): live_resync per audience to every subscriber: {resynced}")
        print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
        return 0 if flushed and in_order and resynced else 1
    finally:
        for s in subs:
            s.stopping.set()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
