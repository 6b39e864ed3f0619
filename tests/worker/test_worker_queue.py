"""The durable queue as the worker uses it: claims, leases, the in-doubt window."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from smsgw_common import queue as q
from smsgw_common.models import Message, MessagePart, SimCard, utcnow

from .worker_harness import Rig, wait_for


@pytest.fixture
def sim(database_url):
    from smsgw_common.db import make_engine, make_sessionmaker

    from .worker_harness import unique_iccid

    engine = make_engine(database_url, pool_size=4)
    Session = make_sessionmaker(engine)
    with Session.begin() as s:
        row = SimCard(iccid=unique_iccid(), number="+15551230000")
        s.add(row)
        s.flush()
        sim_id = row.id
    yield Session, sim_id
    engine.dispose()


def test_two_claimers_never_share_a_row(sim):
    Session, sim_id = sim
    with Session.begin() as s:
        for i in range(40):
            s.add(
                Message(
                    direction="outbound", recipient="+15550001111", message=f"m{i}", status="queued", sim_card_id=sim_id
                )
            )
    got: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        barrier.wait()
        for _ in range(40):
            with Session() as s:
                claimed = q.claim(s, sim_id, f"worker-{name}", limit=3)
                ids = [m.id for m in claimed]
                s.commit()
            if not ids:
                return
            got[name] += ids

    threads = [threading.Thread(target=claimer, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not set(got["a"]) & set(got["b"])
    assert len(got["a"]) + len(got["b"]) == 40


def test_a_lease_expiring_with_a_submitting_part_becomes_unknown_not_resent(rig):
    r = rig(sweep_interval=0.2)
    mid_doubt = r.queue_sms("in doubt")
    mid_clean = r.queue_sms("untouched")
    # A worker that died: it claimed both, and wrote AT+CMGS for one of them.
    with r.Session.begin() as s:
        claimed = q.claim(s, r.sim_card_id, "dead-worker", lease_seconds=-1, limit=2)
        assert {m.id for m in claimed} == {mid_doubt, mid_clean}
        s.add(
            MessagePart(
                message_id=mid_doubt, seq=1, sim_card_id=r.sim_card_id, status=q.PART_SUBMITTING, sent_at=utcnow()
            )
        )
    r.start_worker()
    msg = r.wait_state(mid_doubt, "unknown", timeout=10)
    assert "not resent" in " ".join(e for e in [msg.error_text or ""] + _details(r, mid_doubt))
    r.wait_state(mid_clean, "sent", timeout=10)
    assert [x["text"] for x in r.emulator.sent] == ["untouched"]
    r.mqtt.wait(r.topics.message_events(), lambda p: p["message_id"] == mid_doubt and p["state"] == "unknown")


def test_a_send_that_times_out_after_the_pdu_is_recorded_unknown_and_never_resent(rig):
    r = rig(send_timeout=0.5, emulator_kw={"send_latency": 1.5})
    r.start_worker()
    mid = r.queue_sms("did it leave?")
    r.wait_state(mid, "unknown", timeout=10)
    r.emulator.set_send_latency(0)
    r.wait_state(r.queue_sms("the next one"), "sent", timeout=15)
    texts = [x["text"] for x in r.emulator.sent]
    assert texts.count("did it leave?") <= 1  # the emulator finished it late; the worker never resent it
    assert r.message(mid).status == "unknown"


def test_a_resumed_message_skips_the_parts_already_sent(rig):
    r = rig()
    text = "y" * 300  # two parts
    mid = r.queue_sms(text)
    with r.Session.begin() as s:
        s.add(
            MessagePart(
                message_id=mid, seq=1, sim_card_id=r.sim_card_id, status=q.PART_SENT, reference=200, sent_at=utcnow()
            )
        )
    r.start_worker()
    r.wait_state(mid, "sent", timeout=10)
    assert [x["concat"][2] for x in r.emulator.sent] == [2]
    assert [(p.seq, p.status) for p in r.parts(mid)] == [(1, "sent"), (2, "sent")]


def test_a_cancelled_message_is_not_sent(rig):
    r = rig(claim_interval=0.2)
    mid = r.queue_sms("cancel me", send_at=utcnow() + timedelta(hours=1))
    with r.Session.begin() as s:
        q.record(s, s.get(Message, mid), "cancelled", source="api")
    r.start_worker()
    wait_for(lambda: r.worker.context.want_claim is False, 5)
    assert r.emulator.sent == []


def _details(r: Rig, mid: int) -> list[str]:
    from smsgw_common.models import MessageEvent

    with r.Session() as s:
        return [e.detail or "" for e in s.scalars(select(MessageEvent).where(MessageEvent.message_id == mid))]
