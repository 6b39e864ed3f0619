"""`python -m smsgw_worker probe [ports...]`: which serial ports answer AT,
and what modem and SIM each one holds (a USB modem exposes several ports;
only one of them is the AT port)."""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import asdict
from typing import Any

from .atmodem import ATModem
from .errors import ModemError, SimProblem


def default_ports() -> list[str]:
    by_id = sorted(glob.glob("/dev/serial/by-id/*"))
    seen = {os.path.realpath(p) for p in by_id}
    others = [
        p for p in sorted(glob.glob("/dev/ttyUSB*") + glob.glob("/dev/ttyACM*")) if os.path.realpath(p) not in seen
    ]
    return by_id + others


def probe_port(device: str, timeout: float = 2.0) -> dict[str, Any]:
    """Never raises: a port that does not answer is a normal result."""
    result: dict[str, Any] = {"device": device, "answers_at": False}
    modem = ATModem(device, command_timeout=timeout, sim_busy_timeout=timeout)
    try:
        modem.open()
        modem.sync(attempts=2, timeout=timeout)
        result["answers_at"] = True
        modem._try("ATE0")
        modem._try("AT+CMEE=1")
        sim = modem.sim_state()
        result["sim"] = sim
        ident = modem.identity() if sim == "ready" else None
        if ident is not None:
            result.update({k: v for k, v in asdict(ident).items() if v})
            signal = modem.signal()
            result.update(
                signal_quality=signal.quality,
                signal_dbm=signal.dbm,
                registration=modem.registration(),
                operator=modem.operator(),
            )
        else:
            result.update(manufacturer=modem._first_value("AT+CGMI"), model=modem._first_value("AT+CGMM"))
    except SimProblem as exc:
        result["sim"] = exc.reason
    except ModemError as exc:
        result["error"] = str(exc)
    finally:
        modem.close()
    return result


def format_result(result: dict[str, Any]) -> str:
    if not result["answers_at"]:
        return f"{result['device']}: no AT answer ({result.get('error', 'silent')})"
    hint = {
        "pin_required": "  (the SIM is locked by its PIN: set MODEM_PIN or MODEM_PIN_FILE)",
        "puk_required": "  (the SIM wants its PUK: unlock it in a phone; MODEM_PIN cannot)",
    }.get(result.get("sim") or "", "")
    bits = [
        f"{key}={result[key]}"
        for key in (
            "manufacturer",
            "model",
            "imei",
            "sim",
            "iccid",
            "imsi",
            "number",
            "operator",
            "registration",
            "signal_dbm",
        )
        if result.get(key) not in (None, "")
    ]
    return f"{result['device']}: AT port  " + "  ".join(bits) + hint


def main(argv: list[str]) -> int:
    ports = argv or default_ports()
    if not ports:
        print("no serial ports found (looked at /dev/serial/by-id/*, /dev/ttyUSB*, /dev/ttyACM*)")
        return 1
    found = 0
    for port in ports:
        result = probe_port(port)
        found += result["answers_at"]
        print(format_result(result), flush=True)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
