"""The one way a test waits: for an event, with a bound, saying what it
waited for and what it last saw when the bound runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _describe(message: str | Callable[[], str]) -> str:
    if callable(message):
        try:
            return message()
        except Exception as exc:  # the description must never hide the timeout itself
            return f"<description failed: {exc!r}>"
    return message


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "a condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `predicate` until it returns something truthy and return that.

    `message` names the event (a callable is asked only on failure, so it
    may query the state). Exceptions of the `ignore` types count as "not
    yet" (e.g. connection refused while a server starts); AssertionError is
    never ignored, so a predicate can fail the wait early (a process that
    exited). Raises AssertionError after `timeout` seconds with the last
    value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except AssertionError:
            raise
        except ignore as exc:
            last = exc
        else:
            if last:
                return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(message)}; last seen: {last!r}")
        time.sleep(min(interval, remaining))


def holds_for(
    predicate: Callable[[], Any],
    duration: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "a condition",
) -> None:
    """Assert that `predicate` stays truthy for `duration` seconds.

    For the tests whose subject is that something does NOT happen (no send
    past a cap, no second delivery): the time span is the behaviour under
    test, and checking all along fails at the first breach instead of
    sleeping blind and looking once."""
    deadline = time.monotonic() + duration
    while True:
        value = predicate()
        if not value:
            raise AssertionError(f"no longer true: {_describe(message)}; last seen: {value!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(interval, remaining))
