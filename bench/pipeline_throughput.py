"""Eight emulated modems at 2 s per segment fed 400 messages: aggregate
throughput against the modems' own limit (the gateway must never be what
keeps a modem idle). Target: at least 97%.

    .venv/bin/python bench/pipeline_throughput.py [--modems 8 --messages 400 --latency 2]

Messages are posted by 8 concurrent clients as fast as the API takes them;
the ideal time is ceil(messages / modems) * latency from the first POST.
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

from pipeline_common import Stack


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modems", type=int, default=8)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--latency", type=float, default=2.0, help="seconds per segment at the modem")
    args = ap.parse_args()

    stack = Stack("throughput")
    workers = stack.add_workers(args.modems, EMU_SEND_LATENCY=args.latency)
    time.sleep(1.5)  # the router's SIM snapshot sees every modem online

    session = requests.Session()
    session.headers["X-API-Key"] = stack.api_key
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))

    def post(i: int) -> float:
        resp = session.post(
            stack.base + "/api/sms",
            json={"recipient": f"+4917{secrets.randbelow(10**8):08d}", "message": f"throughput {i}"},
            timeout=30,
        )
        if resp.status_code != 200:
            raise SystemExit(f"POST /api/sms answered {resp.status_code}: {resp.text}")
        return time.time()

    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(post, range(args.messages)))
    fed = max(accepted) - start

    ideal = math.ceil(args.messages / args.modems) * args.latency
    deadline = time.monotonic() + ideal * 2 + 60
    while time.monotonic() < deadline:
        sent = [stack.sent(w) for w in workers]
        if sum(len(s) for s in sent) >= args.messages:
            break
        time.sleep(0.5)
    per_modem = [len(s) for s in sent]
    done = sum(per_modem)
    last = max(r["at"] for s in sent for r in s) if done else float("nan")
    elapsed = last - start
    limit = args.modems / args.latency
    rate = done / elapsed
    print(f"pipeline throughput: {args.modems} modems at {args.latency:g} s/segment, {args.messages} messages")
    print(
        f"  all {args.messages} accepted by the API in {fed:.1f} s; {done} sent in {elapsed:.1f} s "
        f"(ideal {ideal:.0f} s)"
    )
    print(f"  per modem: {per_modem}")
    from sqlalchemy import text

    with stack.engine.connect() as conn:
        moved = conn.execute(
            text("SELECT count(DISTINCT message_id) FROM message_events WHERE detail LIKE '%evening out the queues'")
        ).scalar()
    print(f"  messages moved between queues by the sweeper's rebalancing: {moved}")
    first = [min(r["at"] for r in x) - start for x in sent if x]
    gaps = [b["at"] - a["at"] - args.latency for x in sent for a, b in itertools.pairwise(x)]
    if gaps:
        gaps.sort()
        print(
            f"  first +CMGS after the first POST: {min(first):.2f}-{max(first):.2f} s; modem idle between "
            f"sends (gap - {args.latency:g} s): median {1000 * gaps[len(gaps) // 2]:.0f} ms, "
            f"p90 {1000 * gaps[int(len(gaps) * 0.9)]:.0f} ms, max {1000 * gaps[-1]:.0f} ms"
        )
    print(
        f"  throughput {rate:.3f} msg/s vs the modems' limit {limit:.3f} msg/s = {100 * rate / limit:.1f}% "
        f"(time-based: {100 * ideal / elapsed:.1f}%)"
    )
    print(f"  target >= 97%: {'PASS' if done == args.messages and ideal / elapsed >= 0.97 else 'FAIL'}")
    stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
