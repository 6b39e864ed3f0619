"""How the background pipeline reports its health to /readyz and /metrics.

The pipeline (pipeline/) produces these records; the health route and the
metrics collector only read them, so neither depends on how the loops work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flask import Flask

PIPELINE_KEY = "smsgw_pipeline"


@dataclass(frozen=True)
class LoopStatus:
    name: str
    alive: bool  # its thread is running
    rounds: int  # rounds completed since it started
    age_seconds: float  # since it last completed a round (or started, before its first)
    stale_after: float  # a loop this long without completing a round is stuck

    @property
    def ok(self) -> bool:
        return self.alive and self.age_seconds <= self.stale_after


@dataclass(frozen=True)
class PipelineStatus:
    is_leader: bool  # this process holds the leadership
    leader_id: str | None  # whoever holds it (None: nobody, or unknown)
    me: str  # this process's candidate id
    loops: tuple[LoopStatus, ...]  # the election loop in every process; the work loops in the leader

    @property
    def ok(self) -> bool:
        return all(loop.ok for loop in self.loops)


class PipelineHandle(Protocol):
    def status(self) -> PipelineStatus: ...


def attach(app: Flask, handle: PipelineHandle) -> None:
    app.extensions[PIPELINE_KEY] = handle


def pipeline_status(app: Flask) -> PipelineStatus | None:
    """None: no pipeline runs in this process (PIPELINE_BACKGROUND=off, or a
    test app), so there is nothing of it to check here."""
    handle = app.extensions.get(PIPELINE_KEY)
    return handle.status() if handle is not None else None
