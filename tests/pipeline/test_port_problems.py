"""A worker that never reached its modem (the port cannot be opened) still
shows up in the modem listing, with the problem and its fix: its only voice
is the state it publishes, since it never wrote a modem row itself."""

from __future__ import annotations

import secrets

from .conftest import wait_until


def test_a_worker_that_cannot_open_its_port_is_listed_with_the_fix(api, people, mqtt):
    modem_id = f"noport-{secrets.token_hex(3)}"
    mqtt.modem_state(
        modem_id,
        False,
        reason="port_unavailable",
        device_path="/dev/modem",
        last_error="cannot open /dev/modem: [Errno 13] Permission denied: '/dev/modem'",
    )

    def listed():
        modems = api.get("/api/modems", people["carol"]).json()["modems"]
        return next((m for m in modems if m["id"] == modem_id), None)

    modem = wait_until(listed, 10, 0.1, "the modem in the listing")
    assert modem["online"] is False
    assert [p["code"] for p in modem["problems"]] == ["cannot_open_port"]
    assert "make probe" in modem["problems"][0]["fix"]
