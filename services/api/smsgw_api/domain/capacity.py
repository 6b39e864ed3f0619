"""A SIM as routing sees it, what it has used under its limits, and the
records routing passes around.

Usage has the definition of USAGE_SQL: segments of non-cancelled outbound
messages routed to the SIM, by the time they were accepted; the minute is the
last 60 s, day and month are the UTC calendar, as carriers count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import text


@dataclass
class Sim:
    id: int
    number: str | None
    status: str
    modem_id: str | None
    online: bool
    limit_per_minute: int | None
    limit_per_day: int | None
    limit_per_month: int | None
    site: str | None = None  # its modem's site (modems.site); None: the centre's, or not known

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.limit_per_minute, self.limit_per_day, self.limit_per_month))

    @property
    def rank(self) -> int:
        # Online first; then SIMs whose modem is known (a worker will come
        # back for them); SIMs never seen by a worker last.
        return 0 if self.online else 1 if self.modem_id else 2


@dataclass
class Usage:
    minute: int = 0
    day: int = 0
    month: int = 0

    def add(self, segments: int) -> None:
        self.minute += segments
        self.day += segments
        self.month += segments


@dataclass(frozen=True)
class Hold:
    """Segments counted in Redis for one message: given back if it is not queued after all."""

    sim_id: int
    segments: int
    second: int


class RouteRequest(NamedTuple):
    segments: int
    sim_card_id: int | None  # pinned by the client; None: the gateway chooses
    on_unavailable: str  # "wait" | "fail"
    site: str | None = None  # bound by the client to SIMs of this site
    recipient: str | None = None  # its prefix may prefer a site (site_prefixes)


class Candidate(NamedTuple):
    sim: Sim
    queued: int  # segments already queued on it
    auto: bool  # may take auto-routed messages (False: there only because a message pins it)


class PlanItem(NamedTuple):
    segments: int
    pin: int  # index into the candidates, or -1: auto-routed
    force: bool  # pinned with on_unavailable=wait: queued there even over its limits
    site: str | None = None  # auto-routed: SIMs of this site first
    strict: bool = False  # ... and only them


PREFIX_MAX = 16  # "+" and up to 15 digits: an E.164 number at most


def preferred_site(prefixes: dict[str, str], recipient: str | None) -> str | None:
    """The site of the longest prefix (site_prefixes) the recipient starts with."""
    if not recipient or not prefixes:
        return None
    for end in range(min(len(recipient), PREFIX_MAX), 1, -1):
        site = prefixes.get(recipient[:end])
        if site is not None:
            return site
    return None


def preference(sim: Sim, queued: int, auto: bool, item: PlanItem) -> tuple[int, int, int, int] | None:
    """How well `sim` suits an auto-routed item, lower is better; None: not
    at all. Online first, so that a site that cannot send does not hold a
    message it merely prefers; then the item's site; then the shortest queue.
    RESERVE (domain/limits.py) has the same order in Lua."""
    if not auto or (item.strict and sim.site != item.site):
        return None
    return (sim.rank, 0 if item.site is None or sim.site == item.site else 1, queued, sim.id)


class CounterChange(NamedTuple):
    sim_id: int
    segments: int
    at: float  # epoch time the segments were counted at
    sign: int  # +1 or -1


class Move(NamedTuple):
    segments: int
    from_sim: int
    to_sim: int
    accepted_at: datetime
    held: bool = False  # already counted for to_sim (Router.hold) when it was chosen


# Minute: the last 60 s; day and month: the calendar (UTC), as carriers count.
USAGE_SQL = text(
    "SELECT sim_card_id, "
    "coalesce(sum(segments) FILTER (WHERE timestamp >= now() - interval '1 minute'), 0) AS minute, "
    "coalesce(sum(segments) FILTER "
    "(WHERE timestamp >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0) AS day, "
    "coalesce(sum(segments), 0) AS month "
    "FROM messages WHERE direction = 'outbound' AND sim_card_id = ANY(:ids) AND status <> 'cancelled' "
    "AND timestamp >= "
    "least(date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', now() - interval '1 minute') "
    "GROUP BY sim_card_id"
)


def usage_of(conn, sim_ids: list[int]) -> dict[int, Usage]:
    """Usage from Postgres (the truth the counters are seeded from)."""
    if not sim_ids:
        return {}
    rows = conn.execute(USAGE_SQL, {"ids": list(sim_ids)}).all()
    return {r.sim_card_id: Usage(int(r.minute), int(r.day), int(r.month)) for r in rows}


def has_capacity(sim: Sim, usage: Usage, segments: int) -> bool:
    for limit, used in (
        (sim.limit_per_minute, usage.minute),
        (sim.limit_per_day, usage.day),
        (sim.limit_per_month, usage.month),
    ):
        if limit is not None and used + segments > limit:
            return False
    return True


def sim_of(row) -> Sim:
    """A routing Sim from a SimCard row and its modem's online flag."""
    sim, online = row
    return Sim(
        id=sim.id,
        number=sim.number,
        status=sim.status,
        modem_id=sim.modem_id,
        online=bool(online),
        limit_per_minute=sim.limit_per_minute,
        limit_per_day=sim.limit_per_day,
        limit_per_month=sim.limit_per_month,
    )
