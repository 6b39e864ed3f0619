"""Concurrent sends share one commit, and one bad row fails alone."""

from __future__ import annotations

import threading

from sqlalchemy import text
from support.waits import holds_for

from smsgw_api.core.groupcommit import GroupCommitter

from .api_support import count_rows


def _run_concurrently(gc, works, first_delay=0.3):
    """The first work holds its transaction open so that the others queue up behind it."""
    results: dict[int, object] = {}

    def run(i, work):
        try:
            results[i] = gc.submit(work)
        except Exception as exc:
            results[i] = exc

    holding = threading.Event()

    def first_work(conn):
        holding.set()
        return works[0](conn)

    first = threading.Thread(target=run, args=(0, first_work))
    first.start()
    # The others queue up once the first is inside its transaction.
    assert holding.wait(5), "the first work never started"
    others = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(works[1:], 1)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    return results


def run_each(conn, works):
    return [work(conn) for work in works]


def txid(conn):
    return conn.execute(text("SELECT txid_current()")).scalar()


def test_requests_arriving_during_a_commit_share_the_next_one(engine):
    gc = GroupCommitter(engine, run_each)
    slow = lambda conn: (conn.execute(text("SELECT pg_sleep(0.3)")), txid(conn))[1]  # noqa: E731
    results = _run_concurrently(gc, [slow] + [txid] * 5)
    assert all(isinstance(v, int) for v in results.values()), results
    assert len({results[i] for i in range(1, 6)}) == 1  # one transaction for the five followers
    assert results[0] not in {results[i] for i in range(1, 6)}


def test_a_failing_row_does_not_fail_the_others(engine):
    gc = GroupCommitter(engine, run_each)
    slow = lambda conn: conn.execute(text("SELECT pg_sleep(0.3)")) and "slow"  # noqa: E731
    ok = lambda conn: conn.execute(text("SELECT 'ok'")).scalar()  # noqa: E731
    bad = lambda conn: conn.execute(text("SELECT 1 / 0")).scalar()  # noqa: E731
    results = _run_concurrently(gc, [slow, ok, bad, ok])
    assert results[0] == "slow" and results[1] == "ok" and results[3] == "ok"
    assert "division by zero" in str(results[2])


def test_a_follower_that_waits_too_long_is_withdrawn_and_never_written(engine):
    from smsgw_api.core.groupcommit import CommitTimeout

    gc = GroupCommitter(engine, run_each, wait_timeout=0.2)
    ran = []
    slow = lambda conn: (conn.execute(text("SELECT pg_sleep(0.8)")), "slow")[1]  # noqa: E731
    late = lambda conn: ran.append("late") or "late"  # noqa: E731
    results = _run_concurrently(gc, [slow, late], first_delay=0.3)
    assert results[0] == "slow"
    assert isinstance(results[1], CommitTimeout) and results[1].written is False, results
    holds_for(lambda: ran == [], 0.2, message="the withdrawn work never runs")  # a retry cannot duplicate it
    assert gc.submit(lambda conn: "next") == "next"  # and the committer is not stuck


def test_a_follower_whose_transaction_is_still_running_hears_the_outcome_is_unknown(engine):
    from smsgw_api.core.groupcommit import CommitTimeout

    gc = GroupCommitter(engine, run_each, wait_timeout=0.6)
    done = threading.Event()
    first = lambda conn: (conn.execute(text("SELECT pg_sleep(0.3)")), "first")[1]  # noqa: E731
    # Led by the second request, after the first: still running when the third's wait runs out.
    second = lambda conn: (conn.execute(text("SELECT pg_sleep(0.8)")), done.set(), "second")[2]  # noqa: E731
    third = lambda conn: "third"  # noqa: E731
    results = _run_concurrently(gc, [first, second, third], first_delay=0.3)
    assert results[0] == "first" and results[1] == "second"
    assert isinstance(results[2], CommitTimeout) and results[2].written is None, results
    assert done.is_set()


def test_a_send_that_cannot_be_committed_in_time_is_a_503_and_writes_nothing(app, client, bob, sim, engine):
    from smsgw_api.domain.outbox import insert_messages
    from smsgw_api.routes.sms import _wake_modems

    stuck = GroupCommitter(engine, insert_messages, wait_timeout=0.2, after_commit=_wake_modems)
    stuck._busy = True  # a leader whose commit hangs
    saved = app.extensions.get("smsgw_group_commit")
    app.extensions["smsgw_group_commit"] = stuck
    before = count_rows(engine, "messages")
    try:
        r = client.post(
            "/api/sms",
            json={"recipient": "+4915112345678", "message": "hi", "sim_card_id": sim.id},
            headers={**bob.headers, "Idempotency-Key": "stuck-commit-1"},
        )
    finally:
        if saved is None:
            app.extensions.pop("smsgw_group_commit", None)
        else:
            app.extensions["smsgw_group_commit"] = saved
    assert r.status_code == 503, r.get_json()
    body = r.get_json()
    assert body["code"] == "database_busy" and body["outcome"] == "not_queued" and r.headers["Retry-After"]
    assert count_rows(engine, "messages") == before
    # The same key afterwards queues it once.
    r = client.post(
        "/api/sms",
        json={"recipient": "+4915112345678", "message": "hi", "sim_card_id": sim.id},
        headers={**bob.headers, "Idempotency-Key": "stuck-commit-1"},
    )
    assert r.status_code == 200 and count_rows(engine, "messages") == before + 1


def test_a_send_whose_commit_outcome_is_unknown_says_to_retry_with_the_same_key(app, client, bob, sim, monkeypatch):
    from smsgw_api.core.groupcommit import CommitTimeout
    from smsgw_api.routes import sms

    class Unknown:
        def submit(self, item):
            raise CommitTimeout("the database did not commit in time; the item may still be committed", None)

    monkeypatch.setattr(sms, "committer", lambda: Unknown())
    r = client.post(
        "/api/sms",
        json={"recipient": "+4915112345678", "message": "hi", "sim_card_id": sim.id},
        headers={**bob.headers, "Idempotency-Key": "unknown-outcome-1"},
    )
    assert r.status_code == 503
    body = r.get_json()
    assert body["code"] == "outcome_unknown" and body["outcome"] == "unknown"
    assert "same Idempotency-Key" in body["message"] and body["error"] == body["message"]
