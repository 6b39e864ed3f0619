"""Run the modem emulator as a process until SIGTERM.

    python -m smsgw_worker.emulator --profile generic --link /tmp/ttyEMU0 \
        --control 127.0.0.1:7101
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .control import serve
from .emulator import Emulator
from .profiles import PROFILES


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smsgw_worker.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="generic")
    parser.add_argument("--link", help="symlink to create to the pty (the device a worker opens)")
    parser.add_argument("--control", type=parse_address, help="HOST:PORT for the JSON control API")
    parser.add_argument("--own-number", default="+15550000001")
    parser.add_argument("--iccid", default="8901260000000000001")
    parser.add_argument("--imsi", default="310260000000001")
    parser.add_argument("--imei", default="356938035643809")
    parser.add_argument("--operator", default="Emu Mobile")
    parser.add_argument("--send-latency", type=float, default=0.0)
    parser.add_argument("--report-delay", type=float, default=0.2)
    parser.add_argument("--report-status", type=int, default=0)
    parser.add_argument("--pin")
    parser.add_argument("--ledger", help="append one JSON line per PDU sent to this file (kept across kills)")
    parser.add_argument(
        "--storage", help="keep the SIM's stored messages in this file (non-volatile, as on a real SIM)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    emu = Emulator(
        args.profile,
        link=args.link,
        own_number=args.own_number,
        imei=args.imei,
        iccid=args.iccid,
        imsi=args.imsi,
        operator=args.operator,
        send_latency=args.send_latency,
        report_delay=args.report_delay,
        report_status=args.report_status,
        pin=args.pin,
        ledger=args.ledger,
        storage_file=args.storage,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    emu.start()
    server = serve(emu, *args.control) if args.control else None
    # One line on stdout that scripts can wait for.
    print(
        f"emulator ready device={emu.device}"
        + (f" control={args.control[0]}:{server.server_address[1]}" if server else ""),
        flush=True,
    )
    try:
        done.wait()
    finally:
        if server:
            server.shutdown()
            server.server_close()
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
