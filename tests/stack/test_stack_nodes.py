"""Edge node enrolment in the running stack (docs/deployment.md, "Enrolment"):
the token traded through nginx gives a database role that logs in to the
stack's Postgres with a worker's rights, and a broker user the stack's
Mosquitto lets in within seconds (the API and the broker share the
`node-users` volume); revoking ends both. The node's side is played from
inside the demo worker's container, on the workers' network."""

from __future__ import annotations

import json
import secrets

import pytest

from .support import wait_for
from .test_least_privilege import DB_PROBE, WORKER, refused

pytestmark = pytest.mark.stack


def as_node(stack, user: str, password: str, **statements: str) -> dict | None:
    """What the node's role may do, from a worker's network; None if it cannot log in."""
    done = stack.compose(
        "exec",
        "-T",
        "-e",
        f"POSTGRES_USER={user}",
        "-e",
        f"POSTGRES_PASSWORD={password}",
        WORKER,
        "python",
        "-c",
        DB_PROBE,
        input=json.dumps(list(statements.items())),
        check=False,
    )
    if done.returncode != 0:
        assert "password authentication failed" in done.stderr, done.stderr
        return None
    return json.loads(done.stdout)


def broker_login(stack, user: str, password: str, modem_id: str) -> bool:
    done = stack.exec(
        "mosquitto",
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-u",
        user,
        "-P",
        password,
        "-t",
        f"smsgw/modems/{modem_id}/state",
        "-q",
        "1",
        "-m",
        "{}",
        check=False,
    )
    return done.returncode == 0


def test_an_enrolled_node_logs_in_to_postgres_and_the_broker_until_it_is_revoked(stack, api):
    name = f"stack-{secrets.token_hex(2)}"
    made = api.post(f"{api.base}/api/nodes", json={"name": name, "site": "xx", "modems": 1}, timeout=30)
    assert made.status_code == 201, made.text
    node_id = made.json()["node"]["id"]
    got = api.post(f"{api.base}/api/nodes/enrol", json={"token": made.json()["token"]}, timeout=30)
    assert got.status_code == 200, got.text
    db, users = got.json()["database"], got.json()["broker"]["users"]
    modem_id, modem_password = next(iter(users.items()))

    rights = as_node(
        stack, db["user"], db["password"], queue="SELECT count(*) FROM messages", users="SELECT * FROM users"
    )
    assert rights is not None and rights["queue"][0] == "ok" and refused(rights["users"]), rights
    # The broker reloads the API's file within seconds, without a restart.
    wait_for(lambda: broker_login(stack, modem_id, modem_password, modem_id), 20, 1, "the node's broker user")

    revoked = api.delete(f"{api.base}/api/nodes/{node_id}", timeout=30)
    assert revoked.status_code == 200, revoked.text
    assert as_node(stack, db["user"], db["password"], one="SELECT 1") is None
    wait_for(lambda: not broker_login(stack, modem_id, modem_password, modem_id), 20, 1, "the user to be refused")
