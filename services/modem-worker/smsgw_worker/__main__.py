"""`python -m smsgw_worker run` (the worker) or `probe [ports...]`."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
from types import FrameType

from smsgw_common import bytecode, jsonlog
from smsgw_common.settings import SettingsError

USAGE = "usage: python -m smsgw_worker run | probe [ports...]"
# What a USB worker imports before it runs (compiled ahead on a container's
# first start; bench/first_start_rss.py measures the same).
WORKER_IMPORTS = "import smsgw_worker.worker"
log = logging.getLogger("smsgw_worker")


def run_board() -> int:
    """MODEM_TRANSPORT=seed-mqtt: one seed board over MQTT (smsgw_worker/board)."""
    from .board.settings import BoardSettings

    try:
        settings = BoardSettings.from_env()
    except SettingsError as exc:
        print(f"modem-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    bytecode.compile_then_restart("modem-worker-board", "import smsgw_worker.board.worker")
    from .board.worker import BoardWorker

    jsonlog.setup("modem-worker", settings.common.log_level, settings.common.log_json)
    jsonlog.exit_when_a_thread_dies()
    worker = BoardWorker(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: draining", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()
    return 0


def run() -> int:
    from .settings import WorkerSettings, transport_of

    try:
        if transport_of() == "seed-mqtt":
            return run_board()
        settings = WorkerSettings.from_env()
    except SettingsError as exc:
        print(f"modem-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    demo = ", smsgw_worker.emulator, smsgw_worker.emulator.control" if settings.emulator else ""
    bytecode.compile_then_restart("modem-worker", WORKER_IMPORTS + demo)
    from .worker import Worker  # heavy (SQLAlchemy): only once the settings are sound

    jsonlog.setup("modem-worker", settings.common.log_level, settings.common.log_json)
    jsonlog.exit_when_a_thread_dies()
    emulator = None
    device = settings.device
    if settings.emulator:
        # Demo profile: an emulated modem inside this process.
        from .emulator import Emulator
        from .emulator.control import serve

        # Each demo modem gets its own stable SIM identity, so that several
        # emulated workers never fight over one sim_cards row.
        digits = str(int(hashlib.sha256(settings.modem_id.encode()).hexdigest(), 16))
        emulator = Emulator(
            profile=settings.emulator,
            iccid="89999" + digits[:14],
            imsi="00101" + digits[14:24],
            imei="35" + digits[24:37],
            own_number=os.environ.get("MODEM_EMULATOR_NUMBER") or "+1555" + digits[37:44],
        ).start()
        device = emulator.device
        if settings.emulator_control:
            host, _, port = settings.emulator_control.rpartition(":")
            try:
                serve(emulator, host or "127.0.0.1", int(port))
            except (OSError, ValueError) as exc:
                print(
                    f"modem-worker: cannot serve the emulator control on {settings.emulator_control}: {exc}",
                    file=sys.stderr,
                )
                emulator.stop()
                return 2
        log.info("running against an emulated %s modem on %s", settings.emulator, device)
    from .worker.journal import JournalError

    try:
        worker = Worker(settings, device=device)
    except JournalError as exc:
        # Without its journal the worker could lose what the modem tells it.
        print(f"modem-worker: {exc} (set JOURNAL_DIR to a writable directory)", file=sys.stderr)
        if emulator is not None:
            emulator.stop()
        return 2

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: draining", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.run()
    finally:
        if emulator is not None:
            emulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "run":
        return run()
    if argv[0] == "probe":
        from .probe import main as probe_main

        return probe_main(argv[1:])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
