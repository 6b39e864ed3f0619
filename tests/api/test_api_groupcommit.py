"""Concurrent sends share one commit, and one bad row fails alone."""
from __future__ import annotations

import threading
import time

from sqlalchemy import text
from smsgw_api.groupcommit import GroupCommitter


def _run_concurrently(gc, works, first_delay=0.3):
    """The first work holds its transaction open so that the others queue up behind it."""
    results: dict[int, object] = {}

    def run(i, work):
        try:
            results[i] = gc.submit(work)
        except Exception as exc:
            results[i] = exc

    first = threading.Thread(target=run, args=(0, works[0]))
    first.start()
    time.sleep(first_delay / 3)
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
