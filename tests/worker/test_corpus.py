"""Real-world PDUs (corpus/README.md says where each comes from): each
decoded on its own, then all of them fed through the emulator to a worker."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from smsgw_common.models import RAW_UNDECODABLE, RawInboundPdu
from smsgw_worker import pdu

from .worker_harness import wait_for

CORPUS = json.loads((Path(__file__).parent / "corpus" / "pdus.json").read_text(encoding="utf-8"))
BY_KIND = {
    kind: [v for v in CORPUS if v["kind"] == kind] for kind in ("deliver", "status_report", "submit", "undecodable")
}


def _ids(kind: str) -> list[str]:
    return [v["id"] for v in BY_KIND[kind]]


@pytest.mark.parametrize("vector", BY_KIND["deliver"], ids=_ids("deliver"))
def test_a_real_sms_deliver_decodes_to_its_sender_text_time_and_parts(vector):
    got = pdu.decode(vector["pdu"])
    assert isinstance(got, pdu.Deliver)
    text = got.text if got.encoding != pdu.EIGHT_BIT else (got.data or b"").hex()
    assert (got.sender, text, got.scts) == (vector["sender"], vector["text"], datetime.fromisoformat(vector["scts"]))
    concat = [got.concat.ref, got.concat.total, got.concat.seq] if got.concat else None
    assert concat == vector.get("concat")


@pytest.mark.parametrize("vector", BY_KIND["status_report"], ids=_ids("status_report"))
def test_a_real_status_report_decodes_to_its_reference_and_times(vector):
    got = pdu.decode(vector["pdu"])
    assert isinstance(got, pdu.StatusReport)
    assert (got.recipient, got.reference, got.status) == (vector["recipient"], vector["reference"], vector["status"])
    assert (got.scts, got.discharge) == tuple(datetime.fromisoformat(vector[k]) for k in ("scts", "discharge"))


@pytest.mark.parametrize("vector", BY_KIND["submit"], ids=_ids("submit"))
def test_a_stored_submit_decodes_as_one(vector):
    got = pdu.decode(vector["pdu"])
    assert isinstance(got, pdu.Submit) and (got.recipient, got.text) == (vector["recipient"], vector["text"])


@pytest.mark.parametrize("vector", BY_KIND["undecodable"], ids=_ids("undecodable"))
def test_a_truly_undecodable_pdu_is_refused_and_still_typed(vector):
    with pytest.raises(pdu.PduError):
        pdu.decode(vector["pdu"])
    assert pdu.message_type(vector["pdu"]) == pdu.MTI_DELIVER


def _expected_messages() -> list[tuple[str, str, datetime]]:
    """What the inbox should hold: single SMS as they are, parts joined by
    (sender, reference), an incomplete one with its gaps marked."""
    singles, groups = [], {}
    for v in BY_KIND["deliver"]:
        when = datetime.fromisoformat(v["scts"])
        concat = v.get("concat")
        if not concat or concat[1] == 1:
            singles.append((v["sender"], v["text"], when))
        else:
            groups.setdefault((v["sender"], concat[0], concat[1]), {})[concat[2]] = (v["text"], when)
    for (sender, _ref, total), parts in groups.items():
        text = "".join(parts[n][0] if n in parts else f"[part {n} of {total} missing]" for n in range(1, total + 1))
        singles.append((sender, text, min(t for _, t in parts.values())))
    return sorted(singles, key=lambda m: (m[0], m[2]))


def test_the_whole_corpus_through_the_emulator_reaches_the_inbox_as_it_should(rig):
    r = rig(inbound_part_timeout=2.0, sweep_interval=0.3, emulator_kw={"report_delay": 0.1})
    r.start_worker()
    for vector in CORPUS:
        r.emulator.inject_pdu(vector["pdu"])
    expected = _expected_messages()
    msgs = wait_for(
        lambda: (m := r.inbound()) and len(m) >= len(expected) and m,
        30,
        lambda: f"{len(r.inbound())} of {len(expected)} messages in the inbox",
    )
    got = sorted(((m.sender, m.message, m.sent_at) for m in msgs), key=lambda m: (m[0], m[2]))
    assert got == expected
    # Only the stored SMS-SUBMITs are left on the SIM; the undecodable are in Postgres.
    left = wait_for(lambda: (s := r.emulator.stored_messages()) and len(s) == len(BY_KIND["submit"]) and s, 10)
    assert sorted(m["pdu"] for m in left) == sorted(v["pdu"] for v in BY_KIND["submit"])
    with r.Session() as s:
        kept = s.scalars(
            select(RawInboundPdu.pdu).where(RawInboundPdu.modem_id == r.modem_id, RawInboundPdu.kind == RAW_UNDECODABLE)
        ).all()
    assert sorted(kept) == sorted(v["pdu"] for v in BY_KIND["undecodable"])
