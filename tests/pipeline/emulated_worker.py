"""A modem worker on an emulated modem, as one process (tests and benchmarks).

    EMU_ICCID=... EMU_NUMBER=... MODEM_ID=... python tests/pipeline/emulated_worker.py

Unlike `MODEM_EMULATOR=generic python -m smsgw_worker run`, each process gets
its own SIM identity, so several can run side by side. When EMU_STAMP_FILE is
set, the wall-clock time at which each AT+CMGS reaches the modem is appended
to it (the latency benchmark's far end). EMU_CONTROL_PORT serves the
emulator's control API (inject an SMS, fail sends, ...) on EMU_CONTROL_HOST
(default 127.0.0.1); GET /sent lists
the last EMU_KEEP sends (default 1000).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from smsgw_common import jsonlog
from smsgw_worker.emulator import Emulator
from smsgw_worker.emulator.control import serve
from smsgw_worker.settings import WorkerSettings
from smsgw_worker.worker import Worker


class StampingEmulator(Emulator):
    stamp_file = None

    def _dispatch(self, cmd: str):
        if self.stamp_file is not None and cmd[:6].upper() == "+CMGS=":
            self.stamp_file.write(f"{time.time():.6f}\n")
            self.stamp_file.flush()
        return super()._dispatch(cmd)


def main() -> int:
    env = os.environ
    emu = StampingEmulator(
        "generic",
        iccid=env["EMU_ICCID"],
        own_number=env["EMU_NUMBER"],
        imei=env.get("EMU_IMEI", "35" + env["EMU_ICCID"][-13:]),
        imsi=env.get("EMU_IMSI", "99901" + env["EMU_ICCID"][-10:]),
        send_latency=float(env.get("EMU_SEND_LATENCY", "0")),
        report_delay=float(env.get("EMU_REPORT_DELAY", "0.2")),
        keep=int(env.get("EMU_KEEP", "1000")),  # sends, commands, reports remembered (GET /sent)
    )
    if env.get("EMU_STAMP_FILE"):
        # Open for the whole process: each stamp is written as the command arrives.
        StampingEmulator.stamp_file = open(env["EMU_STAMP_FILE"], "a", buffering=1)  # noqa: SIM115
    emu.start()
    if env.get("EMU_CONTROL_PORT"):
        serve(emu, env.get("EMU_CONTROL_HOST", "127.0.0.1"), int(env["EMU_CONTROL_PORT"]))
    os.environ["MODEM_DEVICE"] = emu.device
    settings = WorkerSettings.from_env()
    jsonlog.setup("modem-worker", settings.common.log_level, settings.common.log_json)
    jsonlog.exit_when_a_thread_dies()
    worker = Worker(settings, device=emu.device)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run()
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
