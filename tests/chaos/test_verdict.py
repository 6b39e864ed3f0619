"""The reconciliation itself, on a hand-made ledger file and API answers: each
rule of the verdict catches what it names. Not marked `chaos`: it needs no
container and runs with `make test`."""

from __future__ import annotations

import json

from .client import Ack
from .ledger import read
from .verdict import Injected, Row, reconcile, reconcile_inbound

T0 = 1_000_000.0


def ack(i: int, mid: int, at: float = T0) -> Ack:
    return Ack(i, f"text {i}", f"key-{i}", message_id=mid, first_try=at, acked_at=at)


def write_ledger(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def sent(text, mr, at):
    return {"kind": "sent", "text": text, "mr": mr, "at": at, "number": "+4917", "pdu": "00"}


def test_each_rule_counts_what_it_names(tmp_path):
    ledger = read(
        [
            write_ledger(
                tmp_path / "ledger-chaos0.jsonl",
                [
                    sent("text 0", 0, T0 + 1),
                    sent("text 1", 1, T0 + 2),
                    sent("text 1", 2, T0 + 3),  # sent twice
                    sent("text 3", 3, T0 + 30),  # long after the recovery
                    {"kind": "report", "mr": 3, "at": T0 + 31, "pdu": "00"},
                    sent("text 4", 4, T0 + 2),
                    '{"kind": "sent", "text": "text 5"',  # cut by a kill: not a send
                ],
            )
        ]
    )
    acks = [ack(0, 10), ack(1, 11), ack(2, 12), ack(3, 13), ack(4, 14), Ack(5, "text 5", "key-5", refused="400 bad")]
    details = {
        10: {"status": "delivered"},
        11: {"status": "delivered"},
        12: {"status": "sent"},  # claims sent, never left: lost
        13: {"status": "sent"},  # the network reported on it: stuck
        14: {"status": "unknown", "events": [{"state": "unknown", "detail": "worker died after AT+CMGS"}]},
    }
    row = reconcile(Row("unit", in_flight=0), acks, details, ledger, recovered=T0 + 1.5, ended=T0 + 40)
    assert (row.requested, row.acked, row.refused, row.once) == (6, 5, 1, 3)
    assert (row.duplicated, row.lost, row.stuck, row.unknown) == (1, 1, 1, 1)
    assert row.unknown_details == ["id 14 (left 1x): worker died after AT+CMGS"]
    assert row.resume == 0.5
    assert row.max_wait == T0 + 40 - (T0 + 1.5)  # the one that never left waited until the end
    failures = " ".join(row.failures())
    for expected in ("only 5 of 6", "lost=1", "duplicated=1", "stuck=1", "unknown=1 > 0 in flight", "waited 38.5 s"):
        assert expected in failures


def test_a_clean_scenario_passes_and_resume_looks_at_the_faulty_modem(tmp_path):
    ledger = read(
        [
            write_ledger(tmp_path / "ledger-chaos0.jsonl", [sent("text 0", 0, T0 + 1), sent("text 2", 1, T0 + 9)]),
            write_ledger(tmp_path / "ledger-chaos1.jsonl", [sent("text 1", 0, T0 + 2)]),
        ]
    )
    acks = [ack(0, 1), ack(1, 2), ack(2, 3, at=T0 + 8)]
    details = {1: {"status": "delivered"}, 2: {"status": "sent"}, 3: {"status": "delivered"}}
    row = reconcile(Row("unit"), acks, details, ledger, recovered=T0 + 1.5, ended=T0 + 20)
    assert row.failures() == [] and row.resume == 0.5
    row = reconcile(Row("unit"), acks, details, ledger, recovered=T0 + 1.5, ended=T0 + 20, faulty=["ledger-chaos0"])
    assert row.resume == 7.5 and "sends resumed after 7.5 s" in " ".join(row.failures())


def test_inbound_sms_are_once_lost_duplicated_or_stuck():
    injected = [Injected(f"in {i}", T0) for i in range(4)]
    recorded, seen = {"in 0": 1, "in 1": 2}, {"in 0": T0 + 1, "in 1": T0 + 2}
    row = reconcile_inbound(Row("unit"), injected, recorded, seen, {"in 2"}, recovered=T0, ended=T0 + 30)
    assert (row.once, row.duplicated, row.stuck, row.lost) == (1, 1, 1, 1)
    assert row.resume == 1 and row.max_wait == 30
