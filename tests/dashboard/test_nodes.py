"""With edge nodes, the overview groups the modems by node and says, per
node, whether the centre hears it and what its workers have not yet
recorded (docs/deployment.md, "Several sites")."""

from __future__ import annotations

import secrets

import pytest
from support.mqtt import Publisher

from .support import PASSWORDS, login

pytestmark = pytest.mark.browser


def test_the_overview_groups_modems_by_node_with_link_state_and_journal_backlog(page, personas, modem, api_env):
    login(page, "alice", PASSWORDS["alice"])
    page.locator(f"[data-modem='{modem['modem_id']}']").wait_for()
    tag = secrets.token_hex(2)
    up, lost = f"berlin-{tag}", f"paris-{tag}"
    workers = Publisher(api_env["MQTT_PREFIX"])
    try:
        workers.modem_state(f"edge-{tag}-a", True, node=up, site="de", journal_backlog=0)
        workers.modem_state(f"edge-{tag}-b", True, node=up, site="de", journal_backlog=2)
        # Its worker's last will: the centre no longer hears that node.
        workers.modem_state(f"edge-{tag}-c", False, node=lost, site="fr", journal_backlog=7, reason="lwt")
        berlin = page.locator(f"section.node-group[data-node='{up}']")
        paris = page.locator(f"section.node-group[data-node='{lost}']")
        paris.wait_for()
        berlin.locator(f"[data-modem='edge-{tag}-b']").wait_for()
        assert "site de" in berlin.locator(":scope > h3").inner_text()
        assert berlin.locator("[data-k='link']").inner_text() == "link up"
        assert "2 of 2 modems online" in berlin.locator(".node-summary").inner_text()
        assert berlin.locator("[data-k='journal_backlog']").inner_text() == "2"
        assert paris.locator("[data-k='link']").inner_text() == "link lost"
        assert paris.locator("[data-k='journal_backlog']").inner_text() == "7"
        # The centre's own modem stays in a group of its own, first.
        centre = page.locator("section.node-group").first
        assert centre.get_attribute("data-node") == ""
        assert centre.locator(f"[data-modem='{modem['modem_id']}']").count() == 1
        assert page.probe.page_errors == []
    finally:
        for m in "abc":
            workers.publish(workers.topics.state(f"edge-{tag}-{m}"), b"", retain=True)  # retained states cleared
        workers.close()
