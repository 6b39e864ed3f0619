"""Two deployment shapes from the same images (docs/deployment.md, "Several
sites"): the CI stack runs as a centre (compose.centre.yml), and an edge node
is a second compose project, made the way `make edge` makes it:
scripts/edge-join.py trades a token from the centre's API for edge.env and
compose.edge.yml, whose workers (the stack's own modem-worker image, two
emulated modems) reach the centre's published Postgres and broker over TLS
only, verified against the dashboard's certificate, with the node's own
credentials. The centre's ports are bound to 127.0.0.1, so the node's
containers share the host's network here (an override of this test's own);
on a real node they reach the centre's address."""

from __future__ import annotations

import secrets
import subprocess
import sys

import psycopg2
import pytest

from .support import ROOT, env_file_values, message, wait_for

pytestmark = pytest.mark.stack

JOIN = ROOT / "scripts" / "edge-join.py"
SITE = "edge-ci"


def modems(api, ids: set[str]) -> list[dict]:
    resp = api.get(f"{api.base}/api/modems", timeout=10)
    assert resp.status_code == 200, resp.text
    return [m for m in resp.json()["modems"] if m["id"] in ids]


def online(api, ids: set[str]) -> dict[str, bool]:
    return {m["id"]: m["online"] for m in modems(api, ids)}


def centre_sql(stack, sql: str) -> list[str]:
    """As the superuser, inside the postgres container (its `local` rule)."""
    user = stack.env.get("POSTGRES_USER") or "smsgw"
    db = stack.env.get("POSTGRES_DB") or "smsgw"
    out = stack.exec("postgres", "psql", "-X", "-At", "-U", user, "-d", db, "-c", sql).stdout
    return out.split()


@pytest.fixture
def edge(stack, api, tls_cert, tmp_path):
    """An enrolled edge node with two emulated modems, up; down -v after."""
    made = api.post(
        f"{api.base}/api/nodes", json={"name": f"ci-{secrets.token_hex(2)}", "site": SITE, "modems": 2}, timeout=30
    )
    assert made.status_code == 201, made.text
    joined = subprocess.run(
        [sys.executable, str(JOIN), "--centre", stack.https, "--token", made.json()["token"], "--ca", tls_cert,
         "--out", str(tmp_path / "edge.env"), "--emulator", "generic",
         "--db-port", stack.env["CENTRE_POSTGRES_PORT"], "--mqtt-port", stack.env["CENTRE_MQTT_PORT"]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    (tmp_path / "host-network.yml").write_text(
        "services:\n  modem-1: {network_mode: host}\n  modem-2: {network_mode: host}\n"
    )
    cmd = ["docker", "compose", "-p", f"{stack.project}-edge", "-f", str(tmp_path / "compose.edge.yml"),
           "-f", str(tmp_path / "host-network.yml"), "--env-file", str(tmp_path / "edge.env")]  # fmt: skip

    def compose(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)

    up = compose("up", "-d", "--no-build", "--wait", "--wait-timeout", "180")
    try:
        assert up.returncode == 0, up.stderr + compose("logs", "--tail", "40").stdout
        yield {
            "node": made.json()["node"],
            "settings": env_file_values(str(tmp_path / "edge.env")),
            "logs": lambda: compose("logs", "--no-color", "--tail", "40").stdout,
        }
    finally:
        compose("down", "-v", "--remove-orphans")


def test_an_edge_node_joins_the_centre_over_tls_and_its_modems_send_for_their_site(stack, api, edge):
    settings = edge["settings"]
    ids = {settings["MODEM_1_ID"], settings["MODEM_2_ID"]}
    wait_for(
        lambda: online(api, ids) == dict.fromkeys(ids, True),
        90,
        1,
        lambda: f"both of the node's modems online at the centre: {online(api, ids)}\n{edge['logs']()}",
    )

    sent = []
    for n in range(4):
        resp = api.post(
            f"{api.base}/api/sms",
            json={"recipient": f"+4915112345{n:03d}", "message": f"via the edge {n}", "site": SITE},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        sent.append(resp.json()["message_id"])
    wait_for(
        lambda: all(message(api, m)["status"] == "delivered" for m in sent),
        90,
        1,
        lambda: f"the site's messages delivered: {[message(api, m)['status'] for m in sent]}\n{edge['logs']()}",
    )
    node_sims = {sim["id"] for m in modems(api, ids) for sim in m["sim_cards"]}
    assert {message(api, m)["sim_card_id"] for m in sent} <= node_sims

    # The node's workers hold sessions of the node's own role, every one over TLS.
    sessions = centre_sql(
        stack,
        "SELECT a.usename || ':' || s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.usename LIKE 'smsgw_node_%'",
    )
    assert sessions and all(s == f"smsgw_node_{edge['node']['id']}:true" for s in sessions), sessions
    # The published port refuses the same credentials without TLS.
    url = settings["DATABASE_URL"].replace("+psycopg2", "").split("?")[0]
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(url, sslmode="disable", connect_timeout=10).close()

    # Revoked at the centre: its role and broker users go, so do its modems.
    resp = api.delete(f"{api.base}/api/nodes/{edge['node']['id']}", timeout=30)
    assert resp.status_code == 200, resp.text
    assert online(api, ids) == dict.fromkeys(ids, False)
    assert {m["last_error"] for m in modems(api, ids)} == {f"node {edge['node']['name']} revoked"}
    assert centre_sql(stack, f"SELECT count(*) FROM pg_roles WHERE rolname = 'smsgw_node_{edge['node']['id']}'") == [
        "0"
    ]
