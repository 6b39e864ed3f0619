"""The demo profile's seed board (docs/boards.md): an emulated ESP32 board on
the broker under its own user, driven by its board worker beside the
emulated USB modems."""

from __future__ import annotations

import uuid

import pytest

from .support import message, online_sims, wait_for

pytestmark = pytest.mark.stack

BOARD_NUMBER = "+15550001000"
EMULATOR = "board-emulator-demo"


def board_sim(api) -> dict | None:
    return next((s for s in online_sims(api) if s["number"] == BOARD_NUMBER), None)


def test_the_demo_boards_sim_takes_a_routed_message_and_reaches_delivered(stack, api):
    sim = wait_for(lambda: board_sim(api), 90, what="the demo board's SIM online")
    text = f"board stack test {uuid.uuid4().hex[:10]}"
    resp = api.post(
        f"{api.base}/api/sms",
        json={"recipient": "+4915112345679", "message": text, "sim_card_id": sim["id"]},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["sim_card_id"] == sim["id"]

    done = wait_for(
        lambda: message(api, body["message_id"])["status"] == "delivered" and message(api, body["message_id"]),
        60,
        what="the board's delivered status",
    )

    assert done["recipient"] == "+4915112345679"
    handed = stack.emulator(EMULATOR, "GET", "/sent")
    assert {"number": "+4915112345679", "message": text, "message_id": str(body["message_id"])} in handed


def test_an_sms_the_demo_board_receives_reaches_the_inbox(stack, api):
    wait_for(lambda: board_sim(api), 90, what="the demo board's SIM online")
    text = f"board inbound {uuid.uuid4().hex[:10]}"
    stack.emulator(EMULATOR, "POST", "/inject", {"sender": "+4917700000002", "text": text})

    def find():
        resp = api.get(f"{api.base}/api/sms/inbox", params={"q": text}, timeout=10)
        assert resp.status_code == 200, resp.text
        return [m for m in resp.json()["messages"] if m.get("message") == text]

    found = wait_for(find, 60, what="the board's inbound SMS in the inbox")
    assert len(found) == 1
