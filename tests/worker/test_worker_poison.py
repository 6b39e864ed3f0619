"""A row the worker cannot read (written by hand, an older version or a
restore, never through the API) is set aside; every other message still goes."""

from __future__ import annotations

from sqlalchemy import text

from .worker_harness import wait_for


def _poison(r, mid: int, assignment: str) -> None:
    # Straight into Postgres: the API would refuse these values.
    with r.engine.begin() as conn:
        conn.execute(text(f"UPDATE messages SET {assignment} WHERE id = :id"), {"id": mid})


def _left(r, mid: int, timeout: float = 10.0) -> None:
    # The emulator reports delivery 0.1 s after the send: either state means it left.
    wait_for(
        lambda: r.message(mid).status in ("sent", "delivered"),
        timeout,
        lambda: f"message {mid} is {r.message(mid).status}",
    )


def test_it_sends_the_other_messages_when_one_has_send_at_in_year_10000(rig):
    r = rig()
    bad = r.queue_sms("poison")
    _poison(r, bad, "send_at = '10000-01-01 00:00:00+00'")
    good = r.queue_sms("still goes")
    r.start_worker()
    _left(r, good)
    failed = r.wait_state(bad, "failed")
    assert failed.error_text == "unreadable row: send_at out of range"
    assert [x["text"] for x in r.emulator.sent] == ["still goes"]


def test_it_sets_aside_dates_before_christ_and_out_of_range_expiry(rig):
    r = rig()
    bc_send = r.queue_sms("bc send_at")
    _poison(r, bc_send, "send_at = '0001-01-01 00:00:00+00 BC'")
    far_expiry = r.queue_sms("expires in 10000")
    _poison(r, far_expiry, "expires_at = '10000-06-01 00:00:00+00'")
    bc_expiry = r.queue_sms("expired before christ")
    _poison(r, bc_expiry, "expires_at = '0001-01-01 00:00:00+00 BC'")
    good = r.queue_sms("fine")
    r.start_worker()
    _left(r, good)
    for mid, field in ((bc_send, "send_at"), (far_expiry, "expires_at"), (bc_expiry, "expires_at")):
        assert r.wait_state(mid, "failed").error_text == f"unreadable row: {field} out of range"
    assert [x["text"] for x in r.emulator.sent] == ["fine"]


def test_it_keeps_sending_past_invalid_values_nulls_and_huge_texts(rig):
    r = rig()
    bogus = r.queue_sms("bogus status")
    _poison(r, bogus, "status = 'bogus'")
    loud = r.queue_sms("priority 99", priority=99)
    sideways = r.queue_sms("sideways")
    _poison(r, sideways, "direction = 'sideways'")
    nobody = r.queue_sms("no recipient")
    _poison(r, nobody, "recipient = NULL")
    huge = r.queue_sms("x" * (1024 * 1024))
    good = r.queue_sms("after them all")
    r.start_worker()
    _left(r, good, timeout=20)
    _left(r, loud)
    assert "cannot encode" in (r.wait_state(nobody, "failed").error_text or "")
    assert "cannot encode" in (r.wait_state(huge, "failed", timeout=20).error_text or "")
    assert r.message(bogus).status == "bogus"  # not ours to guess what it meant
    assert r.wait_state(sideways, "failed").error_text == "unreadable row: direction out of range"
    texts = sorted(x["text"] for x in r.emulator.sent)
    assert "after them all" in texts and "priority 99" in texts
    assert "bogus status" not in texts and "sideways" not in texts and "x" * 10 not in "".join(texts)
