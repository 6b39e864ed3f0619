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


def test_an_admin_adds_an_edge_node_sees_its_join_command_once_and_revokes_it(page, personas, alice_api):
    login(page, "alice", PASSWORDS["alice"])
    page.get_by_role("link", name="Edge nodes").click()
    name = f"lyon-{secrets.token_hex(2)}"
    form = page.locator("form[aria-label='Add an edge node']")
    form.get_by_label("Node name").fill(name)
    form.get_by_label("Site").fill("fr")
    form.get_by_label("Modems").fill("2")
    form.get_by_role("button", name="Add node").click()
    command = page.locator("#join-command").inner_text()
    assert command.startswith("make edge CENTRE=") and " TOKEN=smsgw_enrol_" in command
    row = page.locator("#nodes tbody tr", has_text=name)
    row.locator(".badge-waiting").wait_for()
    assert "0 of 2" in row.inner_text()
    listed = next(n for n in alice_api.get("/api/nodes").json()["nodes"] if n["name"] == name)
    assert listed["site"] == "fr" and listed["modem_ids"] == [f"{name}-1", f"{name}-2"]
    token = command.split("TOKEN=")[1].split()[0]
    assert command.endswith(" CA=centre-cert.pem") and token not in str(listed)  # shown once, never listed

    page.get_by_role("button", name="Done").click()
    assert page.locator("#join-command").count() == 0
    row.get_by_role("button", name=f"New token for {name}").click()
    again = page.locator("#join-command").inner_text()
    assert again != command and " TOKEN=smsgw_enrol_" in again

    row.get_by_role("button", name=f"Revoke node {name}").click()
    row.get_by_role("button", name=f"Confirm: Revoke node {name}").click()
    row.locator(".badge-revoked").wait_for()
    assert row.get_by_role("button", name=f"New token for {name}").count() == 0
    # An invalid name is refused by the API and said next to the field.
    form.get_by_label("Node name").fill("-bad")
    form.get_by_role("button", name="Add node").click()
    error = form.locator(".field-error:not(:empty)").first
    error.wait_for()
    assert error.get_attribute("id") == form.get_by_label("Node name").get_attribute("id") + "-err"
    assert all(n["name"] != "-bad" for n in alice_api.get("/api/nodes").json()["nodes"])
    assert page.probe.page_errors == []


def test_the_edge_nodes_page_is_for_admins_only(page, personas):
    login(page, "bob", PASSWORDS["bob"])
    assert page.get_by_role("link", name="Edge nodes").count() == 0
