"""support.waits: a wait returns what it waited for, or fails saying what
that was and what it last saw."""

from __future__ import annotations

import itertools
import time

import pytest
from support.waits import holds_for, wait_until


def test_it_returns_the_first_truthy_value():
    counter = itertools.count()
    assert wait_until(lambda: next(counter) >= 3 and "ready", 2, 0.001) == "ready"


def test_a_timeout_names_the_event_and_the_last_value_seen():
    values = iter(range(1000))
    with pytest.raises(AssertionError, match=r"waiting for the answer to be 42; last seen: \d+"):
        wait_until(lambda: (next(values) == 42 and False) or next(values) * 0, 0.2, 0.01, "the answer to be 42")


def test_a_described_timeout_asks_for_the_description_only_then():
    asked = []

    def describe():
        asked.append(1)
        return "the state"

    assert wait_until(lambda: True, 1, 0.01, describe)
    assert asked == []
    with pytest.raises(AssertionError, match="the state"):
        wait_until(lambda: None, 0.1, 0.01, describe)


def test_ignored_exceptions_mean_not_yet_and_are_reported():
    attempts = itertools.count()

    def flaky():
        if next(attempts) < 2:
            raise ConnectionError("refused")
        return "up"

    assert wait_until(flaky, 2, 0.001, ignore=(ConnectionError,)) == "up"
    with pytest.raises(AssertionError, match="ConnectionError"):
        wait_until(lambda: (_ for _ in ()).throw(ConnectionError("refused")), 0.1, 0.01, ignore=(ConnectionError,))


def test_an_assertion_in_the_predicate_fails_at_once():
    started = time.monotonic()
    with pytest.raises(AssertionError, match="the process exited"):
        wait_until(lambda: (_ for _ in ()).throw(AssertionError("the process exited")), 10, 0.01)
    assert time.monotonic() - started < 5


def test_holds_for_fails_at_the_first_breach():
    values = iter([True, True, False, True])
    started = time.monotonic()
    with pytest.raises(AssertionError, match="no longer true: nothing sent"):
        holds_for(lambda: next(values), 10, 0.01, "nothing sent")
    assert time.monotonic() - started < 5
    holds_for(lambda: True, 0.1, 0.01)
