"""Who reads which audit lines (docs/security.md, "Audit log visibility"):
admins everything; anyone else their own lines in full and everyone's
message and SIM actions without the client address; never other people's
logins, users, keys or webhook URLs."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import text

OPERATIONAL = ("send_sms", "add_sim_card", "cancel_sms")
PRIVATE = ("authentication", "webhook_create", "create_api_key", "update_user")


@pytest.fixture
def audit_lines(engine, alice, bob, charlie):
    tag = secrets.token_hex(4)
    with engine.begin() as conn:
        for who in (alice, bob, charlie):
            for action in OPERATIONAL + PRIVATE:
                conn.execute(
                    text(
                        "INSERT INTO logs (action, details, status, user_id, actor, ip, request_id) "
                        "VALUES (:a, :d, 'success', :u, :actor, '203.0.113.9', :r)"
                    ),
                    {
                        "a": action,
                        "d": f"{action} http://10.0.0.5/hook",
                        "u": who.id,
                        "actor": who.username,
                        "r": f"{tag}-{who.username}-{action}",
                    },
                )
    return tag


def _lines(client, who, tag) -> list[dict]:
    r = client.get("/api/logs?per_page=200", headers=who.headers)
    assert r.status_code == 200
    return [x for x in r.get_json()["logs"] if (x["request_id"] or "").startswith(tag)]


def test_an_admin_reads_every_line_with_addresses(client, alice, audit_lines):
    lines = _lines(client, alice, audit_lines)
    assert len(lines) == 3 * len(OPERATIONAL + PRIVATE)
    assert all(x["ip"] == "203.0.113.9" for x in lines)


@pytest.mark.parametrize("reader", ["bob", "charlie"])
def test_others_read_message_and_sim_actions_without_addresses_and_their_own_lines(
    client, alice, bob, charlie, audit_lines, reader
):
    me = {"bob": bob, "charlie": charlie}[reader]
    lines = _lines(client, me, audit_lines)
    mine = [x for x in lines if x["user_id"] == me.id]
    theirs = [x for x in lines if x["user_id"] != me.id]
    assert sorted(x["action"] for x in mine) == sorted(OPERATIONAL + PRIVATE)
    assert all(x["ip"] == "203.0.113.9" for x in mine)
    assert sorted(x["action"] for x in theirs) == sorted(OPERATIONAL * 2)
    assert all(x["ip"] is None for x in theirs)
    assert not [x for x in theirs if x["action"] in PRIVATE]
