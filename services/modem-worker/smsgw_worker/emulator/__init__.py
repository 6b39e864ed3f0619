"""The project's modem emulator: `from smsgw_worker.emulator import Emulator`.

Where each behaviour lives:

- emulator.py   `Emulator`: what tests, benchmarks and the control server do (inject, faults, radio)
- core.py       `EmulatedModem`: power and boot, the pty, the loop and timers, parsing and dispatch
- commands.py   one function per AT command
- network.py    sends leaving, status reports and SMS arriving, AT+CNMI routing, AT+CNMA, storage
- state.py      the modem's data: error texts, stored messages, settings a reset restores
- profiles.py   vendor profiles (generic, huawei, simcom, quectel, direct, nokia) and quirks recorded from real devices
- control.py    the JSON HTTP control server for an emulator run as a process
"""

from .emulator import Emulator
from .profiles import PROFILES, QUIRKS, Profile

__all__ = ["PROFILES", "QUIRKS", "Emulator", "Profile"]
