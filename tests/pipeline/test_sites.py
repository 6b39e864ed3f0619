"""A modem on an edge node is listed with its node and site, and with how
many facts its worker has not yet recorded (docs/deployment.md, "Several
sites"); a modem of the centre has none."""

from __future__ import annotations

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
