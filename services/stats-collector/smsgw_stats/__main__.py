"""`python -m smsgw_stats`: the statistics collector.

Exits 2 with a one-line reason on bad settings; SIGTERM/SIGINT stop it after
the pending samples are written.
"""

from __future__ import annotations

import logging
import signal
import sys

from smsgw_common import bytecode, jsonlog
from smsgw_common.settings import SettingsError

bytecode.compile_then_restart("stats-collector", "import smsgw_stats.service")

from .service import Collector  # noqa: E402  (after its bytecode is written)
from .settings import StatsSettings  # noqa: E402

log = logging.getLogger("smsgw_stats")


def main(argv: list[str] | None = None) -> int:
    try:
        settings = StatsSettings.from_env()
    except SettingsError as exc:
        print(f"stats-collector: configuration error: {exc}", file=sys.stderr)
        return 2
    jsonlog.setup("stats-collector", settings.common.log_level, settings.common.log_json)
    jsonlog.exit_when_a_thread_dies()
    collector = Collector(settings)

    def _stop(signum, frame):
        log.info("signal %s received", signal.Signals(signum).name)
        collector.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "collector started",
        extra={
            "interval": settings.interval,
            "disk_path": settings.disk_path,
            "host_proc": settings.host_proc,
            "metrics_port": settings.metrics_port,
        },
    )
    try:
        collector.run()
    except OSError as exc:
        # e.g. the metrics port is taken: say so plainly rather than a traceback.
        log.error("collector cannot run: %s", exc)
        return 1
    log.info("collector stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
