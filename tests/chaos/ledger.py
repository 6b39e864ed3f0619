"""The far end's record: what the emulated modems really transmitted.

Each emulator process appends one JSON line per PDU that left
(`"kind": "sent"`) and per status report the network made (`"kind":
"report"`) to its own file (`--ledger`, smsgw_worker/emulator/core.py).
The file lives outside every process the tier kills, so it is the witness
the gateway's own records are checked against.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Ledger:
    sends: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # text -> times it left
    reported: set[str] = field(default_factory=set)  # texts whose send the network reported on
    send_times: list[float] = field(default_factory=list)
    by_modem: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # ledger file stem -> times

    def times(self, text: str) -> int:
        return len(self.sends.get(text, ()))

    def first_send_after(self, t: float, modems: list[str] | None = None) -> float | None:
        """The first PDU to leave at or after t (from the named modems' ledgers, or any)."""
        pool = self.send_times if modems is None else [s for m in modems for s in self.by_modem.get(m, ())]
        later = [s for s in pool if s >= t]
        return min(later) if later else None


def read(paths: list[Path]) -> Ledger:
    ledger = Ledger()
    for path in paths:
        if not path.exists():
            continue
        last_text_by_mr: dict[int, str] = {}
        for line in path.read_text().splitlines():
            if not line.endswith("}"):
                continue  # a line cut by a kill mid-write is not a send
            rec = json.loads(line)
            if rec["kind"] == "sent":
                ledger.sends[rec["text"]].append(rec["at"])
                ledger.send_times.append(rec["at"])
                ledger.by_modem[path.stem].append(rec["at"])
                last_text_by_mr[rec["mr"]] = rec["text"]
            elif rec["kind"] == "report" and rec["mr"] in last_text_by_mr:
                # References wrap at 256: a report is for the latest send with its reference.
                ledger.reported.add(last_text_by_mr[rec["mr"]])
    return ledger
