"""The delivery log must not make the gateway a LAN scanner for its users:
a `user` sees whether the receiver answered and with which HTTP status, never
why a connection failed; an admin sees the details (docs/webhooks.md)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.orm import Session

from smsgw_common.models import Webhook, WebhookDelivery

REFUSED = (
    "ConnectionError: HTTPConnectionPool(host='10.0.0.7', port=5432): Max retries exceeded "
    "(Caused by NewConnectionError('Failed to establish a new connection to 10.0.0.7: [Errno 111] Connection refused'))"
)
TIMED_OUT = "ConnectTimeout: HTTPConnectionPool(host='10.0.0.8', port=22): connect timeout=10"
POLICY = "host db.internal resolves to 127.0.0.1: 127.0.0.1 is a loopback address and WEBHOOK_ALLOW_LOOPBACK is off"


@pytest.fixture
def hook_log(engine, bob):
    with Session(engine, expire_on_commit=False) as s:
        hook = Webhook(user_id=bob.id, url="http://10.0.0.7:5432/", events=["webhook.test"], secret="s" * 32)
        s.add(hook)
        s.flush()
        rows = {}
        for name, code, error, status in (
            ("refused", None, REFUSED, "failed"),
            ("timeout", None, TIMED_OUT, "pending"),
            ("policy", None, POLICY, "failed"),
            ("http", 503, "receiver answered HTTP 503", "failed"),
            ("ok", 200, None, "delivered"),
        ):
            d = WebhookDelivery(
                webhook_id=hook.id,
                event_id=str(uuid.uuid4()),
                event_type="webhook.test",
                payload={"name": name},
                status=status,
                attempts=1,
                last_status_code=code,
                last_error=error,
            )
            s.add(d)
            s.flush()
            rows[d.id] = name
        s.commit()
        return hook.id, rows


def _log(client, who, hook_id, rows) -> dict:
    r = client.get(f"/api/webhooks/{hook_id}/deliveries?per_page=50", headers=who.headers)
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    return {rows[d["id"]]: d for d in r.get_json()["deliveries"]}


def test_a_user_sees_only_whether_and_how_the_receiver_answered(client, bob, hook_log):
    hook_id, rows = hook_log
    log = _log(client, bob, hook_id, rows)
    # Refused, timed out and refused by the address rules all read the same.
    texts = {log[n]["last_error"] for n in ("refused", "timeout", "policy")}
    assert len(texts) == 1
    (text,) = texts
    for secret in ("111", "refused", "timeout", "10.0.0", "db.internal", "127.0.0.1", "Errno"):
        assert secret not in text.lower()
    assert all(log[n]["last_status_code"] is None for n in ("refused", "timeout", "policy"))
    assert log["http"]["last_status_code"] == 503 and log["http"]["last_error"] == "receiver answered HTTP 503"
    assert log["ok"]["last_error"] is None and log["ok"]["status"] == "delivered"


def test_an_admin_sees_the_full_error(client, alice, hook_log):
    hook_id, rows = hook_log
    log = _log(client, alice, hook_id, rows)
    assert log["refused"]["last_error"] == REFUSED
    assert log["timeout"]["last_error"] == TIMED_OUT
    assert log["policy"]["last_error"] == POLICY
