"""A modem on an edge node is listed with its node and site, and with how
many facts its worker has not yet recorded (docs/deployment.md, "Several
sites"); a modem of the centre has none."""

from __future__ import annotations

import secrets

from .conftest import wait_until


def test_a_modem_on_an_edge_node_is_listed_with_its_node_site_and_journal_backlog(api, people, workers):
    edge, centre = workers(1, NODE_NAME="berlin-1", SITE="de")[0], workers(1)[0]

    def listed(worker):
        modems = api.get("/api/modems", people["carol"]).json()["modems"]
        return next((m for m in modems if m["id"] == worker.modem_id and m["online"]), None)

    at_edge = wait_until(lambda: listed(edge), 15, 0.1, "the edge modem in the listing")
    assert (at_edge["node"], at_edge["site"], at_edge["journal_backlog"]) == ("berlin-1", "de", 0)
    at_centre = wait_until(lambda: listed(centre), 15, 0.1, "the centre's modem in the listing")
    assert (at_centre["node"], at_centre["site"], at_centre["journal_backlog"]) == (None, None, 0)


def test_a_revoked_nodes_modems_go_offline_at_once_and_no_state_of_theirs_brings_them_back(
    api, people, workers, mqtt, db_session, sockets
):
    """Revoking removes the node's broker users, and a removed user's last
    will is refused by the ACL: the centre would never hear "offline". And the
    broker still holds their last retained "online" state, which it hands to
    the API again after a restart."""
    from smsgw_common.models import Modem

    made = api.post("/api/nodes", people["alice"], {"name": f"rv-{secrets.token_hex(2)}", "site": "rv", "modems": 1})
    assert made.status_code == 201, made.text
    node = made.json()["node"]
    worker = workers(1, NODE_NAME=node["name"], SITE="rv", modem_id=node["modem_ids"][0])[0]

    def online(modem_id: str) -> bool | None:
        with db_session() as s:
            row = s.get(Modem, modem_id)
            return None if row is None else row.online

    wait_until(lambda: online(worker.modem_id), 15, 0.1, "the node's modem online")
    # A node cut off, or a Pi pulled: nothing of it speaks (its last will is
    # 45 s away, and a revoked user's would be refused anyway).
    worker.kill()
    dashboard = sockets(auth={"token": people["carol"].token()})
    revoked = api.delete(f"/api/nodes/{node['id']}", people["alice"])
    assert revoked.status_code == 200, revoked.text
    assert online(worker.modem_id) is False  # in the revoke's own transaction
    listed = next(m for m in api.get("/api/modems", people["carol"]).json()["modems"] if m["id"] == worker.modem_id)
    why = f"node {node['name']} revoked"
    assert (listed["online"], listed["last_error"]) == (False, why)
    # Open dashboards are told, and one that connects later starts from it.
    dashboard.wait_for("modem_status", lambda d: d["modem_id"] == worker.modem_id and d["last_error"] == why)
    later = sockets(auth={"token": people["carol"].token()})
    first = later.wait_for("modem_status", lambda d: d["modem_id"] == worker.modem_id)
    assert (first["online"], first["last_error"]) == (False, why)

    # A retained "online" handed over again, or a worker the broker has not
    # shut out, does not count. A state of another modem published after it
    # shows that it was handled.
    mqtt.modem_state(worker.modem_id, True, node=node["name"], site="rv")
    marker = f"marker-{secrets.token_hex(3)}"
    mqtt.modem_state(marker, False, last_error="marker")
    wait_until(lambda: online(marker) is False, 15, 0.1, "the marker's state handled")
    assert online(worker.modem_id) is False
