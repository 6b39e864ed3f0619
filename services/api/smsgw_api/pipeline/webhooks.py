"""Webhook delivery (events leader only; docs/webhooks.md).

Postgres is the truth for what must be delivered. Message events
(`message.*`) are derived from the `message_events` table, the history every
state change is written to in the transaction that makes it: the dispatcher
reads the events after a durable cursor (`event_cursors`, pipeline/cursor.py),
writes one `webhook_deliveries` row per subscribed hook and advances the
cursor in the same transaction. An event is delivered even if its MQTT copy
never reached a leader: MQTT only wakes the dispatcher up early. Modem events
(`modem.*`) have no history table; the leader derives them from the modems'
retained MQTT state (pipeline/events.py).

Due rows are POSTed (core/safe_http.py) and failures retried with exponential
backoff up to WEBHOOK_MAX_ATTEMPTS, after which the delivery is `failed` and
the hook is marked failing until one succeeds again.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import timedelta

import requests
from sqlalchemy import text

from smsgw_api.core.runtime import Runtime
from smsgw_api.core.safe_http import USER_AGENT, http_session, post_pinned, resolve_url, sign
from smsgw_api.domain.webhooks import active_hooks, insert_deliveries, message_event_deliveries
from smsgw_api.pipeline.cursor import EventDeriver
from smsgw_api.pipeline.loop import WakeableLoop
from smsgw_common.db import session_scope
from smsgw_common.models import Webhook, WebhookDelivery, utcnow

log = logging.getLogger(__name__)


CURSOR_NAME = "webhooks.message_events"

_EVENT_COLUMNS = """
    SELECT e.id, e.message_id, e.state, e.at, e.error_code, e.error_text,
           m.direction, m.sender, m.recipient, m.message, m.sim_card_id, m.sender_sim, m.segments,
           m.user_id, s.modem_id
    FROM message_events e
    JOIN messages m ON m.id = e.message_id
    LEFT JOIN sim_cards s ON s.id = m.sim_card_id
"""


class MessageEventDeliveries(EventDeriver):
    """One pending delivery per subscribed hook for every `message_events` row."""

    cursor_name = CURSOR_NAME
    start_sql = "SELECT coalesce(max(id), 0) FROM message_events"
    rows_sql = _EVENT_COLUMNS

    def handle(self, session, rows) -> int:
        hooks = active_hooks(session)
        if not hooks:
            return 0
        values = [v for r in rows for v in message_event_deliveries(hooks, r)]
        return insert_deliveries(session, values)


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before attempt `attempts + 1`: base, 2*base, 4*base ... with
    +-10% jitter so that a receiver coming back is not hit by a thundering herd."""
    delay = min(cap, base * (2 ** max(attempts - 1, 0)))
    return delay * random.uniform(0.9, 1.1)


_CLAIM = text(
    """
    UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => :lease)
    FROM webhooks w
    WHERE d.webhook_id = w.id AND d.id IN (
        SELECT id FROM webhook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id
        LIMIT :n
        FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.event_id, d.event_type, d.payload, d.attempts, w.id AS hook_id, w.url, w.secret,
              w.is_active
    """
)


class Dispatcher(WakeableLoop):
    """Derives message deliveries from the history, then POSTs due rows.

    `wake()` (an MQTT event arrived, a delivery finished) starts a round at
    once; without one a round runs every WEBHOOK_POLL_SECONDS, so an event
    whose MQTT copy was lost waits at most that long.
    """

    thread_name = "webhook-dispatcher"

    def __init__(self, runtime: Runtime):
        super().__init__(runtime.pipeline.webhook_poll_interval)
        self.settings = runtime.pipeline
        self.sessionmaker = runtime.sessionmaker
        self._free = self.settings.webhook_concurrency
        self._lock = threading.Lock()
        self.http = http_session()
        self.deriver = MessageEventDeliveries(runtime.sessionmaker)

    def run(self) -> None:
        while not self.stopping.is_set():
            # Cleared before the round: a wake-up during it starts the next one.
            self._wake.clear()
            more = self.deriver.run_round("deriving webhook deliveries")
            try:
                with self._lock:
                    free = self._free
                if free:
                    claimed = self._dispatch_due(free)
                    more = more or claimed >= free
                if not self.deriver.failed:
                    self.round_done()
            except Exception:
                log.exception("webhook dispatch round failed")
            if not more:
                self._wake.wait(self.settings.webhook_poll_interval)

    def _dispatch_due(self, limit: int) -> int:
        with session_scope(self.sessionmaker) as session:
            rows = (
                session.execute(_CLAIM, {"n": limit, "lease": self.settings.webhook_timeout * 4 + 30}).mappings().all()
            )
        for row in rows:
            with self._lock:
                self._free -= 1
            threading.Thread(target=self._deliver_guarded, args=(dict(row),), daemon=True).start()
        return len(rows)

    def _deliver_guarded(self, row: dict) -> None:
        try:
            self.deliver(row)
        except Exception:
            log.exception("webhook delivery %s crashed", row["id"])
        finally:
            with self._lock:
                self._free += 1
            self._wake.set()

    def deliver(self, row: dict) -> None:
        s = self.settings
        status_code, error = None, None
        addresses: list[str]
        if not row["is_active"]:
            error, addresses = "webhook is disabled", []
        else:
            # Resolve once, check every address, connect only to those.
            error, addresses = resolve_url(row["url"], s.webhook_allow_private, s.webhook_allow_loopback)
        if error is None:
            body = json.dumps(row["payload"], separators=(",", ":"), ensure_ascii=False).encode()
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-SMSGW-Event-Id": row["event_id"],
                "X-SMSGW-Event": row["event_type"],
                "X-SMSGW-Timestamp": ts,
                "X-SMSGW-Signature": sign(row["secret"], ts, body),
                "X-SMSGW-Delivery-Attempt": str(row["attempts"] + 1),
            }
            try:
                resp = post_pinned(
                    self.http, row["url"], addresses, data=body, headers=headers, timeout=s.webhook_timeout
                )
                status_code = resp.status_code
                resp.close()
                if not 200 <= status_code < 300:
                    error = f"receiver answered HTTP {status_code}"
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
        self._record(row, status_code, error)

    def _record(self, row: dict, status_code: int | None, error: str | None) -> None:
        s = self.settings
        attempts = row["attempts"] + 1
        now = utcnow()
        with session_scope(self.sessionmaker) as session:
            delivery = session.get(WebhookDelivery, row["id"], with_for_update=True)
            hook = session.get(Webhook, row["hook_id"], with_for_update=True)
            if delivery is None or hook is None:
                return  # the hook was deleted meanwhile
            delivery.attempts = attempts
            delivery.last_status_code = status_code
            if error is None:
                delivery.status, delivery.delivered_at, delivery.last_error = "delivered", now, None
                hook.consecutive_failures, hook.failing = 0, False
            else:
                delivery.last_error = error
                hook.consecutive_failures = (hook.consecutive_failures or 0) + 1
                if attempts >= s.webhook_max_attempts or not row["is_active"]:
                    delivery.status = "failed"
                    hook.failing = True
                    log.warning(
                        "webhook delivery gave up",
                        extra={"webhook_id": hook.id, "delivery_id": delivery.id, "error": error},
                    )
                else:
                    delay = backoff_seconds(attempts, s.webhook_backoff_base, s.webhook_backoff_max)
                    delivery.next_attempt_at = now + timedelta(seconds=delay)
