"""What the stats collector costs: CPU (% of one core) and RSS while it samples
at a 10 s interval, writes to Postgres and listens on MQTT.

    .venv/bin/python bench/stats_cost.py [--duration 60] [--interval 10] [--scrape-interval 15] [--check]

Starts `python -m smsgw_stats` against a database of its own (created,
migrated and dropped) and the broker on 127.0.0.1, lets it warm up (imports
are a one-off cost, reported apart), then reads its CPU time and RSS from
/proc for `--duration` seconds. Targets: < 1 % of one core, < 30 MB RSS;
`--check` exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg2
import requests
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from shared_fixtures import create_database, drop_database

CPU_TARGET = 1.0  # % of one core
RSS_TARGET = 30 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    parser.add_argument("--interval", type=float, default=10.0, help="STATS_INTERVAL (default 10)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds left out of the CPU figure (default 5)")
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=0.0,
        help="also scrape its /metrics this often, as Prometheus would (default: never)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.duration <= 0 or args.interval <= 0 or args.warmup < 0:
        parser.error("--duration and --interval must be positive, --warmup not negative")

    db_name = f"smsgw_bench_stats_{secrets.token_hex(3)}"
    url = create_database(db_name)
    proc = None
    try:
        from smsgw_api.migrate import upgrade

        upgrade(url)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "STATS_"))}
        env.update(
            DATABASE_URL=url,
            MQTT_HOST="127.0.0.1",
            MQTT_PORT="1883",
            MQTT_PREFIX=f"smsgw-bench-{secrets.token_hex(3)}/",
            STATS_INTERVAL=str(args.interval),
            STATS_METRICS_PORT=str(port),
            STATS_METRICS_ADDR="127.0.0.1",
            LOG_LEVEL="WARNING",
        )
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "smsgw_stats"], env=env)
        p = psutil.Process(proc.pid)
        time.sleep(args.warmup)
        if proc.poll() is not None:
            raise SystemExit(f"the collector exited during warm-up with code {proc.returncode}")
        t0 = p.cpu_times()
        startup_cpu = t0.user + t0.system
        wall0 = time.monotonic()
        rss_max = rss_sum = n = pss_max = uss_max = 0
        next_scrape = wall0 + args.scrape_interval if args.scrape_interval else None
        end = wall0 + args.duration
        while (now := time.monotonic()) < end:
            full = p.memory_full_info()
            rss = full.rss
            rss_max, rss_sum, n = max(rss_max, rss), rss_sum + rss, n + 1
            # RSS counts shared library pages (libpython, OpenSSL, libc) in
            # full; PSS shares them out, USS is what this process alone holds.
            pss_max, uss_max = max(pss_max, full.pss), max(uss_max, full.uss)
            if next_scrape is not None and now >= next_scrape:
                requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                next_scrape += args.scrape_interval
            time.sleep(min(1.0, max(0.0, end - now)))
        t1 = p.cpu_times()
        wall = time.monotonic() - wall0
        cpu_pct = 100.0 * ((t1.user + t1.system) - startup_cpu) / wall
        # The kernel counts CPU time in clock ticks: below one tick over the
        # run, the figure is 0 and only "< resolution" is known.
        resolution = 100.0 / os.sysconf("SC_CLK_TCK") / wall
        with psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)) as c:
            with c.cursor() as cur:
                cur.execute("SELECT count(*) FROM stat_samples")
                stored = cur.fetchone()[0]
        result = {
            "interval_s": args.interval,
            "measured_s": round(wall, 1),
            "cpu_percent_of_one_core": round(cpu_pct, 3),
            "rss_max_mb": round(rss_max / 1048576, 1),
            "rss_mean_mb": round(rss_sum / max(n, 1) / 1048576, 1),
            "pss_max_mb": round(pss_max / 1048576, 1),
            "uss_max_mb": round(uss_max / 1048576, 1),
            "cpu_resolution_percent": round(resolution, 4),
            "startup_cpu_s": round(startup_cpu, 2),
            "startup_wall_s": round(wall0 - started, 1),
            "samples_stored": stored,
            "scrape_interval_s": args.scrape_interval or None,
            "targets": {"cpu_percent": CPU_TARGET, "rss_mb": RSS_TARGET / 1048576},
        }
        ok = cpu_pct < CPU_TARGET and rss_max < RSS_TARGET
        print(json.dumps(result, indent=2))
        cpu_text = f"{cpu_pct:.3f}%" if cpu_pct > 0 else f"< {resolution:.3f}%"
        print(
            f"collector @ {args.interval:g}s: {cpu_text} of one core, RSS max {rss_max / 1048576:.1f} MB "
            f"(PSS {pss_max / 1048576:.1f}, USS {uss_max / 1048576:.1f}) "
            f"-> {'within' if ok else 'MISSES'} targets (<{CPU_TARGET:g}%, <{RSS_TARGET // 1048576} MB RSS)"
        )
        return 0 if ok or not args.check else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        drop_database(db_name)


if __name__ == "__main__":
    sys.exit(main())
