"""RSS of each Python service's process on a container's first start: when
it compiles its own imports (as before), and when they were compiled first
and the service starts over in a fresh process (smsgw_common/bytecode.py, as
the services now do).

    .venv/bin/python bench/first_start_rss.py [--rounds 3]

The images carry no bytecode and set PYTHONPYCACHEPREFIX, so a container's
first process compiles everything it imports. Each measurement here uses a
fresh, empty prefix (that first start): either one interpreter runs the
service's imports, or one runs `bytecode.compile_ahead` with what the
service passes it and exits, and a second runs the service's imports. The
measuring interpreter reads its RSS and anonymous RSS from /proc/self/status
after a gc. The two ways alternate, `--rounds` times; medians, their ratio
and the load average are printed. Imports only: no database, broker or
modem is needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from smsgw_api.__main__ import GUNICORN_IMPORTS
from smsgw_worker.__main__ import WORKER_IMPORTS

# Per service: what it imports before serving, and what it compiles ahead
# (the services' compile_then_restart / compile_ahead calls).
SERVICES = {
    "modem-worker": (WORKER_IMPORTS, WORKER_IMPORTS),
    # smsgw_stats.__main__ compiles this at import: a copy.
    "stats-collector": ("import smsgw_stats.service", "import smsgw_stats.service"),
    "api master": ("import gunicorn.app.wsgiapp, gunicorn.workers.ggevent, smsgw_api.gunicorn_conf", GUNICORN_IMPORTS),
    "api worker": ("from gevent import monkey; monkey.patch_all()\n" + GUNICORN_IMPORTS, GUNICORN_IMPORTS),
}
AHEAD = "from smsgw_common import bytecode\nassert bytecode.compile_ahead({name!r}, {code!r})\n"
REPORT = (
    "\nimport gc; gc.collect()\n"
    "s = {l.split(':')[0]: int(l.split()[1])\n"
    "     for l in open('/proc/self/status') if l.startswith(('VmRSS', 'RssAnon'))}\n"
    "print(s['VmRSS'], s['RssAnon'])\n"
)


def measure(name: str, imports: str, ahead: str | None) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="first-start-") as prefix:
        env["PYTHONPYCACHEPREFIX"] = prefix
        run = {"env": env, "capture_output": True, "text": True, "timeout": 300, "check": True}
        if ahead is not None:
            subprocess.run([sys.executable, "-c", AHEAD.format(name=name, code=ahead)], **run)  # type: ignore[call-overload]
        out = subprocess.run([sys.executable, "-c", imports + REPORT], **run).stdout.split()  # type: ignore[call-overload]
    return int(out[-2]) / 1024, int(out[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(f"{'service':16s} | in-process RSS (anon) MB | ahead RSS (anon) MB | ratio RSS")
    for name, (imports, ahead) in SERVICES.items():
        cold: list[tuple[float, float]] = []
        warm: list[tuple[float, float]] = []
        for _ in range(args.rounds):
            cold.append(measure(name, imports, None))
            warm.append(measure(name, imports, ahead))
        c_rss, c_anon = (statistics.median(x[i] for x in cold) for i in (0, 1))
        w_rss, w_anon = (statistics.median(x[i] for x in warm) for i in (0, 1))
        cells = f"{c_rss:8.1f} ({c_anon:5.1f})          | {w_rss:7.1f} ({w_anon:5.1f})"
        print(f"{name:16s} | {cells}      | {w_rss / c_rss:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
