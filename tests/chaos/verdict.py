"""Reconciling a scenario: every acknowledged message against the ledger
(what left the modems) and the API (what the gateway says), into one row of
the verdict table, and the strict checks on that row.

- transmitted once: the ledger has its text exactly once.
- duplicated: more than once.
- lost: never transmitted and the gateway claims otherwise (sent or
  delivered), or the API no longer knows it.
- unknown: the gateway says `unknown`; each is listed with its detail.
- stuck: not settled when the scenario's time ran out: still queued or
  sending, or still `sent` although the network reported on it.
- resume: seconds from the fault's end (recovery) to the first PDU that left
  (the faulty modem's, when the fault was one modem's).
- max wait: the longest any message waited past the fault's end, from
  max(acknowledged, recovered) to its transmission (the scenario's end for
  one never transmitted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .client import Ack
from .ledger import Ledger

SETTLED = {"delivered", "failed", "unknown", "expired", "cancelled"}
RESUME_LIMIT = 5.0  # issue 12: sends resume within 5 s of any single fault
WAIT_LIMIT = 10.0  # issue 12: no message waits longer than 10 s past the fault's end


@dataclass
class Row:
    scenario: str
    requested: int = 0
    acked: int = 0
    refused: int = 0
    once: int = 0
    lost: int = 0
    duplicated: int = 0
    unknown: int = 0
    stuck: int = 0
    in_flight: int = 0
    resume: float | None = None
    max_wait: float | None = None
    seconds: float = 0.0
    load: float = 0.0  # the machine's 1-minute load average at the scenario's end
    unknown_details: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per message that broke a rule (first few)

    def failures(self) -> list[str]:
        """The strict verdicts (issue 12, items 5 and 6); empty when the scenario passes."""
        out = []
        if self.acked < self.requested:
            out.append(f"only {self.acked} of {self.requested} sends acknowledged ({self.refused} refused)")
        for name in ("lost", "duplicated", "stuck"):
            if getattr(self, name):
                out.append(f"{name}={getattr(self, name)} (must be 0)")
        if any(d.endswith(NO_DETAIL) for d in self.unknown_details):
            out.append("an `unknown` without a detail saying what happened")
        if self.unknown > self.in_flight:
            out.append(f"unknown={self.unknown} > {self.in_flight} in flight at the fault")
        if self.resume is None or self.resume > RESUME_LIMIT:
            out.append(f"sends resumed after {fmt(self.resume)} s (limit {RESUME_LIMIT:g})")
        if self.max_wait is not None and self.max_wait > WAIT_LIMIT:
            out.append(f"a message waited {self.max_wait:.1f} s past the fault (limit {WAIT_LIMIT:g})")
        return out


def fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


NO_DETAIL = "<no detail>"


def last_detail(detail: dict) -> str:
    for e in reversed(detail.get("events") or []):
        if e.get("state") == "unknown":
            return e.get("detail") or e.get("error_text") or NO_DETAIL
    return detail.get("error_text") or NO_DETAIL


def settled_at(detail: dict | None, status: str | None) -> float | None:
    """When the message took its final state, from its history (epoch seconds)."""
    if detail is None or status not in SETTLED:
        return None
    for e in reversed(detail.get("events") or []):
        if e.get("state") == status and e.get("at"):
            return datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
    return None


def reconcile(
    row: Row,
    acks: list[Ack],
    details: dict[int, dict | None],
    ledger: Ledger,
    recovered: float,
    ended: float,
    faulty: list[str] | None = None,
) -> Row:
    """`details[id]` is GET /api/sms/<id>'s message (None: 404)."""
    row.requested = len(acks)
    waits: list[float] = []
    for ack in acks:
        if ack.message_id is None:
            row.refused += 1
            row.problems.append(f"#{ack.index} not acknowledged: {ack.refused}")
            continue
        row.acked += 1
        detail = details.get(ack.message_id)
        status = detail["status"] if detail else None
        n = ledger.times(ack.text)
        if n == 1:
            row.once += 1
        elif n > 1:
            row.duplicated += 1
            row.problems.append(f"#{ack.index} (id {ack.message_id}) transmitted {n} times, status {status}")
        if detail is None:
            row.lost += 1
            row.problems.append(f"#{ack.index} (id {ack.message_id}) acknowledged, unknown to the API")
        elif n == 0 and status in ("sent", "delivered"):
            row.lost += 1
            row.problems.append(f"#{ack.index} (id {ack.message_id}) is {status} but never left a modem")
        if status == "unknown":
            row.unknown += 1
            row.unknown_details.append(f"id {ack.message_id} (left {n}x): {last_detail(detail or {})}")
        elif status not in SETTLED and not (status == "sent" and ack.text not in ledger.reported):
            row.stuck += 1
            why = "reported by the network, still sent" if status == "sent" else f"still {status}"
            row.problems.append(f"#{ack.index} (id {ack.message_id}) {why} (left {n}x)")
        start = max(ack.acked_at or ack.first_try, recovered)
        left = ledger.sends.get(ack.text)
        # One that never left waited until it settled (e.g. `unknown` when its
        # worker came back), or until the verdict if it never did.
        waits.append((left[0] if left else settled_at(detail, status) or ended) - start)
    row.resume = None if (first := ledger.first_send_after(recovered, faulty)) is None else first - recovered
    row.max_wait = max(waits) if waits else None
    return row


HEADER = (
    f"{'scenario':<26} {'acked':>5} {'once':>5} {'lost':>4} {'dup':>4} {'unkn':>4} {'infl':>4}"
    f" {'stuck':>5} {'resume s':>8} {'maxwait s':>9} {'wall s':>6} {'load':>5}  verdict"
)


def table(rows: list[Row]) -> str:
    lines = [HEADER, "-" * len(HEADER)]
    for r in rows:
        verdict = "PASS" if not r.failures() else "FAIL"
        lines.append(
            f"{r.scenario:<26} {r.acked:>5} {r.once:>5} {r.lost:>4} {r.duplicated:>4} {r.unknown:>4} {r.in_flight:>4}"
            f" {r.stuck:>5} {fmt(r.resume):>8} {fmt(r.max_wait):>9}"
            f" {r.seconds:>6.0f} {r.load:>5.1f}  {verdict}"
        )
    for r in rows:
        for line in r.failures():
            lines.append(f"  {r.scenario}: {line}")
        for line in r.unknown_details:
            lines.append(f"  {r.scenario}: unknown {line}")
        for line in r.problems[:5]:
            lines.append(f"  {r.scenario}: {line}")
        if len(r.problems) > 5:
            lines.append(f"  {r.scenario}: ... and {len(r.problems) - 5} more")
    return "\n".join(lines)


@dataclass
class Injected:
    """An SMS the network handed to an emulated modem."""

    text: str
    at: float  # time.time()


def reconcile_inbound(
    row: Row,
    injected: list[Injected],
    recorded: dict[str, int],
    seen: dict[str, float],
    on_sim: set[str],
    recovered: float,
    ended: float,
) -> Row:
    """`recorded[text]`: how often that text is in the API's inbox; `seen[text]`:
    when it first showed there; `on_sim`: texts still stored on a modem."""
    row.requested = row.acked = len(injected)
    waits: list[float] = []
    for sms in injected:
        n = recorded.get(sms.text, 0)
        if n == 1:
            row.once += 1
        elif n > 1:
            row.duplicated += 1
            row.problems.append(f"{sms.text!r} recorded {n} times")
        elif sms.text in on_sim:
            row.stuck += 1
            row.problems.append(f"{sms.text!r} still on the SIM, not in the inbox")
        else:
            row.lost += 1
            row.problems.append(f"{sms.text!r} gone from the SIM and not in the inbox")
        waits.append(seen.get(sms.text, ended) - max(sms.at, recovered))
    after = [t for t in seen.values() if t >= recovered]
    row.resume = min(after) - recovered if after else None
    row.max_wait = max(waits) if waits else None
    return row
