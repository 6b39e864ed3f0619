"""Two test runs on one machine share one Redis: each package holds a
database of its own (support/services.py) and flushes only that one."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import redis as redis_lib
from support.services import REDIS_BASE, REDIS_LOCK_PREFIX, reserve_redis_db
from support.waits import holds_for, wait_until

TESTS = Path(__file__).resolve().parents[1]

# Another run: reserve, write a key, report, wait to be told to finish, release.
OTHER_RUN = textwrap.dedent(
    """
    import sys

    import redis
    from support.services import reserve_redis_db

    r = reserve_redis_db("other-run", ttl_ms=int(sys.argv[1]))
    redis.Redis.from_url(r.url).set("theirs", "1")
    print(r.db, flush=True)
    if sys.stdin.readline().strip() == "release":
        r.release()
        print("released", flush=True)
    """
)


def other_run(python: str, ttl_ms: int = 120_000) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [python, "-c", OTHER_RUN, str(ttl_ms)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def read_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().strip()  # the child answers within its start-up; pytest-timeout bounds a hang
    assert line, f"the other run said nothing (exit {proc.poll()})"
    return line


def locks() -> redis_lib.Redis:
    return redis_lib.Redis.from_url(f"{REDIS_BASE}/0")


def test_two_concurrent_runs_hold_different_databases_and_keep_each_others_keys(python):
    mine = reserve_redis_db("this-run")
    try:
        redis_lib.Redis.from_url(mine.url).set("ours", "1")
        other = other_run(python)
        try:
            their_db = int(read_line(other))
            assert their_db != mine.db
            # Our key survived their start (a FLUSHDB of the database they took),
            # and theirs survives while we work in ours.
            assert redis_lib.Redis.from_url(mine.url).get("ours") == b"1"
            assert redis_lib.Redis.from_url(f"{REDIS_BASE}/{their_db}").get("theirs") == b"1"
            other.stdin.write("release\n")
            other.stdin.flush()
            assert read_line(other) == "released"
            assert other.wait(10) == 0
        finally:
            if other.poll() is None:
                other.kill()
                other.wait(5)
        # Their release emptied their database only, and gave it back.
        assert redis_lib.Redis.from_url(mine.url).get("ours") == b"1"
        assert redis_lib.Redis.from_url(f"{REDIS_BASE}/{their_db}").get("theirs") is None
        assert locks().get(f"{REDIS_LOCK_PREFIX}{their_db}") is None
    finally:
        mine.release()
    assert locks().get(mine.key) is None


def test_a_holder_that_lost_its_lock_flushes_nothing_on_release():
    mine = reserve_redis_db("this-run")
    db = redis_lib.Redis.from_url(mine.url)
    successor = "a-later-run:1:beef"
    try:
        db.set("successors", "1")
        # As if our lock had expired and another run had taken the database.
        locks().set(mine.key, successor)
        mine.release()
        assert db.get("successors") == b"1"
        assert locks().get(mine.key) == successor.encode()
    finally:
        # The successor was only played by this test: give the database back.
        if locks().get(mine.key) == successor.encode():
            db.flushdb()
            locks().delete(mine.key)


def test_a_killed_runs_database_is_free_again_when_its_lock_expires(python):
    other = other_run(python, ttl_ms=1500)
    try:
        their_db = int(read_line(other))
        key = f"{REDIS_LOCK_PREFIX}{their_db}"
        # Renewed while the run lives: held for two lifetimes of the lock (the
        # span is what is tested), always with an expiry.
        holds_for(lambda: 0 < locks().pttl(key) <= 1500, 3.0, 0.1, f"{key} held, with an expiry")
        other.send_signal(signal.SIGSTOP)  # hung, like a run stopped in a debugger or killed
        wait_until(lambda: locks().get(key) is None, 5, 0.1, f"the stopped run's lock {key} to expire")
    finally:
        other.kill()
        other.wait(5)
    # Their key may stay: the database is no longer ours to touch, and its
    # next holder empties it when it takes it.
