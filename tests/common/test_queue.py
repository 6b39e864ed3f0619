"""The durable queue against the real Postgres: claims, leases, expiry."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from smsgw_common import queue
from smsgw_common.db import make_engine, make_sessionmaker, session_scope
from smsgw_common.models import Message, MessageEvent, MessagePart, SimCard, utcnow


@pytest.fixture(scope="module")
def factory(database_url):
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def sim(factory):
    with session_scope(factory) as s:
        s.execute(delete(Message))
        card = SimCard(number="+15550000001", status="active")
        s.add(card)
        s.flush()
        sim_id = card.id
    return sim_id


def enqueue(factory, sim_id, n=1, **kw):
    ids = []
    with session_scope(factory) as s:
        for i in range(n):
            msg = Message(
                direction="outbound",
                recipient="+15550009999",
                message=f"m{i}",
                sim_card_id=sim_id,
                status=queue.QUEUED,
                **kw,
            )
            queue.record(s, msg, queue.QUEUED, source="test")
            ids.append(msg.id)
    return ids


def test_a_claim_moves_the_message_to_sending_with_a_lease_and_history(factory, sim):
    [mid] = enqueue(factory, sim)
    with session_scope(factory) as s:
        [msg] = queue.claim(s, sim, "w1", lease_seconds=60)
    with session_scope(factory) as s:
        msg = s.get(Message, mid)
        assert (msg.status, msg.worker_id, msg.attempts) == ("sending", "w1", 1)
        assert msg.lease_until > utcnow() + timedelta(seconds=50)
        states = s.scalars(
            select(MessageEvent.state).where(MessageEvent.message_id == mid).order_by(MessageEvent.id)
        ).all()
        assert states == ["queued", "sending"]


def test_high_priority_is_claimed_first(factory, sim):
    enqueue(factory, sim, 2)
    [urgent] = enqueue(factory, sim, 1, priority=10)
    with session_scope(factory) as s:
        assert [m.id for m in queue.claim(s, sim, "w1", limit=1)] == [urgent]


def test_scheduled_and_expired_messages_are_not_claimed(factory, sim):
    enqueue(factory, sim, 1, send_at=utcnow() + timedelta(hours=1))
    enqueue(factory, sim, 1, expires_at=utcnow() - timedelta(seconds=1))
    with session_scope(factory) as s:
        assert queue.claim(s, sim, "w1", limit=10) == []


def test_two_concurrent_claimers_never_get_the_same_message(factory, sim):
    ids = set(enqueue(factory, sim, 40))
    got: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def worker(name):
        barrier.wait()
        for _ in range(40):
            with session_scope(factory) as s:
                claimed = queue.claim(s, sim, name, limit=3)
                got[name].extend(m.id for m in claimed)
            if not claimed:
                break

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not set(got["a"]) & set(got["b"])
    assert set(got["a"]) | set(got["b"]) == ids


def test_an_expired_lease_is_requeued_when_nothing_was_written_to_the_modem(factory, sim):
    [mid] = enqueue(factory, sim)
    with session_scope(factory) as s:
        queue.claim(s, sim, "w1", lease_seconds=-1)
    with session_scope(factory) as s:
        assert queue.reclaim_expired_leases(s) == {"queued": 1, "unknown": 0, "failed": 0}
    with session_scope(factory) as s:
        assert s.get(Message, mid).status == "queued"


def test_a_lease_lost_between_cmgs_and_its_answer_becomes_unknown_not_a_resend(factory, sim):
    [mid] = enqueue(factory, sim)
    with session_scope(factory) as s:
        queue.claim(s, sim, "w1", lease_seconds=-1)
        s.add(MessagePart(message_id=mid, seq=1, sim_card_id=sim, status=queue.PART_SUBMITTING))
    with session_scope(factory) as s:
        assert queue.reclaim_expired_leases(s) == {"queued": 0, "unknown": 1, "failed": 0}
    with session_scope(factory) as s:
        msg = s.get(Message, mid)
        assert msg.status == "unknown"
        assert "not resent" in msg.events[-1].detail


def test_a_lost_lease_on_a_message_with_a_failure_report_fails_it_with_the_report_not_unknown(factory, sim):
    [mid] = enqueue(factory, sim)
    with session_scope(factory) as s:
        queue.claim(s, sim, "w1", lease_seconds=-1)
        # Part 1 left and the network reported it undeliverable; part 2 was in
        # flight when the worker died.
        s.add(
            MessagePart(
                message_id=mid,
                seq=1,
                sim_card_id=sim,
                status=queue.PART_FAILED,
                reference=7,
                report_status=0x41,
                report_at=utcnow(),
            )
        )
        s.add(MessagePart(message_id=mid, seq=2, sim_card_id=sim, status=queue.PART_SUBMITTING))
    with session_scope(factory) as s:
        assert queue.reclaim_expired_leases(s) == {"queued": 0, "unknown": 0, "failed": 1}
    with session_scope(factory) as s:
        msg = s.get(Message, mid)
        assert (msg.status, msg.error_code, msg.worker_id, msg.lease_until) == ("failed", 0x41, None, None)
        assert msg.error_text == "delivery failed: TP-ST 0x41 (incompatible destination)"
        assert msg.failed_at is not None and "part 1" in msg.events[-1].detail


def test_a_refused_send_is_not_a_failure_report_and_the_lost_lease_still_requeues(factory, sim):
    [mid] = enqueue(factory, sim)
    with session_scope(factory) as s:
        queue.claim(s, sim, "w1", lease_seconds=-1)
        s.add(MessagePart(message_id=mid, seq=1, sim_card_id=sim, status=queue.PART_FAILED))  # AT+CMGS refused
    with session_scope(factory) as s:
        assert queue.reclaim_expired_leases(s) == {"queued": 1, "unknown": 0, "failed": 0}
    with session_scope(factory) as s:
        assert s.get(Message, mid).status == "queued"


def test_messages_past_validity_or_without_report_expire(factory, sim):
    [late] = enqueue(factory, sim, 1, expires_at=utcnow() - timedelta(seconds=1))
    [silent] = enqueue(factory, sim)
    with session_scope(factory) as s:
        msg = s.get(Message, silent)
        queue.record(s, msg, queue.SENT, source="w1", at=utcnow() - timedelta(hours=3))
    with session_scope(factory) as s:
        counts = queue.expire_due(s, report_timeout=timedelta(hours=2))
    assert counts == {"validity": 1, "no_report": 1}
    with session_scope(factory) as s:
        assert s.get(Message, late).status == "expired"
        assert "delivery unknown" in s.get(Message, silent).events[-1].detail
