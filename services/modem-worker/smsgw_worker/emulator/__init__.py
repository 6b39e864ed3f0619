"""The project's modem emulator: `from smsgw_worker.emulator import Emulator`."""
from .core import Emulator
from .profiles import PROFILES, Profile

__all__ = ["Emulator", "PROFILES", "Profile"]
