"""A seed board as a modem: sending, its status words, receiving, silence,
repeats and who may report for which SIM."""

from __future__ import annotations

import json

from smsgw_common.models import Message, Modem, SimCard
from smsgw_common.topics import Topics

from .conftest import history, message, queue_message, random_number, wait_state, wait_until


def states(db_session, message_id: int) -> list[str]:
    return [e.state for e in history(db_session, message_id)]


def test_a_board_gets_the_seeds_send_payload_and_its_delivered_status_settles_the_message(
    boards, db_session, board_env, listen
):
    board = boards(delay=0.05)
    events = listen(Topics(board_env["MQTT_PREFIX"]).message_events())
    recipient = random_number()
    message_id = queue_message(db_session, board.sim_id, "hello board", recipient=recipient)

    done = wait_state(db_session, message_id, "delivered")

    handed = wait_until(board.emulator.handed_over, what="the board to get the message")
    assert handed == [{"number": recipient, "message": "hello board", "message_id": str(message_id)}]
    assert states(db_session, message_id) == ["queued", "sending", "sent", "delivered"]
    assert done.sent_at is not None and done.delivered_at is not None
    # The same events a USB modem's worker publishes, after the database has them.
    wait_until(lambda: events.matching(events_topic(board_env), message_id=message_id, state="delivered"))
    assert [e["state"] for e in events.matching(events_topic(board_env), message_id=message_id)] == [
        "sending",
        "sent",
        "delivered",
    ]
    assert wait_until(lambda: events.matching(events_topic(board_env), message_id=message_id))[0]["modem_id"] == (
        board.worker.modem_id
    )


def events_topic(env) -> str:
    return Topics(env["MQTT_PREFIX"]).message_events()


def test_a_board_registers_its_sim_by_number_and_reuses_a_sim_an_admin_created(boards, db_session):
    number = random_number()
    with db_session() as s:
        sim = SimCard(number=number, status="active", limit_per_minute=7)
        s.add(sim)
        s.commit()
        sim_id = sim.id
    board = boards(number=number)
    assert board.sim_id == sim_id
    with db_session() as s:
        modem = s.get(Modem, board.worker.modem_id)
        assert modem.online and modem.device_path.endswith("sms/send/" + number[1:])
        assert s.get(SimCard, sim_id).modem_id == modem.id


def test_a_restarted_board_keeps_its_own_sim_row_when_another_has_its_number(boards, db_session):
    number = random_number()
    modem_id = "board-" + number[1:]
    with db_session() as s:
        s.add(Modem(id=modem_id, online=False))
        s.flush()
        own = SimCard(number=number, status="active", modem_id=modem_id)
        s.add(own)
        s.flush()
        # Say, the same number typed in again by an admin later.
        s.add(SimCard(number=number, status="active"))
        s.commit()
        own_id = own.id
    board = boards(number=number)
    assert board.sim_id == own_id


def test_a_failed_status_in_any_case_fails_the_message(boards, db_session):
    board = boards(delay=0.05, words=["SENT", "Failed"])
    message_id = queue_message(db_session, board.sim_id)

    failed = wait_state(db_session, message_id, "failed")

    assert states(db_session, message_id) == ["queued", "sending", "sent", "failed"]
    assert failed.error_text == "the board reported the send failed"
    assert "'Failed'" in history(db_session, message_id)[-1].detail


def test_an_unknown_status_word_is_kept_as_detail_and_changes_no_state(boards, db_session):
    board = boards(delay=0.05, words=["sent", "Queued-On-Modem"])
    message_id = queue_message(db_session, board.sim_id)

    wait_until(lambda: board.worker.counters.notes == 1, what="the unknown word to be noted")

    assert message(db_session, message_id).status == "sent"
    note = history(db_session, message_id)[-1]
    assert note.state == "board_status" and "'Queued-On-Modem'" in note.detail


def test_a_status_answered_twice_changes_nothing_the_second_time(boards, db_session):
    board = boards(delay=0.05, fault="twice")
    message_id = queue_message(db_session, board.sim_id)

    wait_state(db_session, message_id, "delivered")
    wait_until(lambda: board.worker.counters.repeats >= 2, what="both repeats to be seen")

    assert states(db_session, message_id) == ["queued", "sending", "sent", "delivered"]
    # A late repeat of an earlier word does not take it back either.
    board.emulator.report(message_id, "sent")
    wait_until(lambda: board.worker.counters.repeats >= 3, what="the late repeat")
    assert message(db_session, message_id).status == "delivered"
    assert states(db_session, message_id).count("delivered") == 1


def test_an_sms_a_board_receives_lands_in_the_inbox_like_a_usb_modems(boards, db_session, board_env, listen):
    board = boards()
    events = listen(events_topic(board_env))
    sender = random_number()

    board.emulator.inject(sender, "STOP please, cześć")

    wait_until(lambda: board.worker.counters.received == 1, what="the inbound SMS")
    with db_session() as s:
        row = s.query(Message).filter(Message.direction == "inbound", Message.sender == sender).one()
    assert (row.status, row.recipient, row.sim_card_id, row.sender_sim) == (
        "received",
        board.number,
        board.sim_id,
        board.number,
    )
    assert row.message == "STOP please, cześć" and row.encoding == "UCS-2"
    assert states(db_session, row.id) == ["received"]
    event = wait_until(lambda: events.matching(events_topic(board_env), message_id=row.id))[0]
    assert (event["state"], event["direction"], event["message"]) == ("received", "inbound", "STOP please, cześć")


def test_a_silent_board_leaves_its_messages_unknown_goes_offline_and_comes_back_with_a_late_status(
    boards, db_session, board_env, listen
):
    board = boards(
        fault="silent",
        env={"BOARD_STATUS_TIMEOUT": "0.6", "BOARD_OFFLINE_AFTER": "2", "BOARD_PROBE_INTERVAL": "600"},
    )
    states_topic = Topics(board_env["MQTT_PREFIX"]).state(board.worker.modem_id)
    retained = listen(states_topic)
    first = queue_message(db_session, board.sim_id)
    second = queue_message(db_session, board.sim_id)

    for message_id in (first, second):
        unknown = wait_state(db_session, message_id, "unknown", timeout=10)
        assert "no status from the board within 0.6s" in history(db_session, message_id)[-1].detail
        assert unknown.lease_until is None

    with db_session() as s:
        modem = wait_until(
            lambda: (m := s.get(Modem, board.worker.modem_id, populate_existing=True)) and not m.online and m
        )
        assert "answered none of the last 2 messages" in modem.last_error
    wait_until(lambda: retained.matching(states_topic, online=False), what="the retained offline state")
    # Offline: nothing more is handed over until the probe is due.
    third = queue_message(db_session, board.sim_id)
    assert len(board.emulator.handed_over()) == 2
    assert message(db_session, third).status == "queued"

    # The board was only slow: its late word settles the message and brings it back.
    board.emulator.report(first, "delivered")
    wait_state(db_session, first, "delivered")
    assert states(db_session, first)[-3:] == ["unknown", "sent", "delivered"]
    with db_session() as s:
        wait_until(lambda: s.get(Modem, board.worker.modem_id, populate_existing=True).online, what="online again")
    wait_until(lambda: retained.matching(states_topic, online=True), what="the retained online state")
    wait_until(lambda: message(db_session, third).status == "sending", what="the queue to move again")


def test_a_board_cannot_report_for_another_sims_message_nor_receive_for_another_number(boards, db_session):
    alice = boards(fault="silent", env={"BOARD_STATUS_TIMEOUT": "60"})
    bob = boards(fault="silent", env={"BOARD_STATUS_TIMEOUT": "60"})
    mine = queue_message(db_session, alice.sim_id)
    wait_state(db_session, mine, "sending")

    # Bob's board, under its own number, claims Alice's message: Bob's worker refuses it.
    bob.emulator.report(mine, "delivered")
    wait_until(lambda: bob.worker.counters.refused == 1, what="Bob's worker to refuse")
    # Under a number no board has, nobody takes it.
    bob.emulator.report(mine, "failed", sender_number=random_number())
    # A message id that is no message at all.
    alice.emulator.report("not-an-id", "delivered")
    wait_until(lambda: alice.worker.counters.refused == 1, what="Alice's worker to refuse the bogus id")

    # An SMS reported for a number that is no board's SIM: stored nowhere, no SIM made up.
    stranger = random_number()
    bob.emulator.inject(random_number(), "for nobody", receiver=stranger)
    wait_until(lambda: bob.worker.counters.foreign >= 2 and alice.worker.counters.foreign >= 2, what="ignored")

    assert message(db_session, mine).status == "sending"
    assert states(db_session, mine) == ["queued", "sending"]
    with db_session() as s:
        assert s.query(SimCard).filter(SimCard.number == stranger).count() == 0
        assert s.query(Message).filter(Message.message == "for nobody").count() == 0


def test_an_invalid_board_payload_is_dropped_and_the_worker_carries_on(boards, db_session):
    board = boards(delay=0.05)
    client = board.emulator.client
    for raw in (b"not json", b"[]", json.dumps({"message_id": "1", "status": "sent"}).encode()):
        client.publish(board.emulator.topics.status(), raw, qos=1).wait_for_publish(5)
    client.publish(
        board.emulator.topics.receive(),
        json.dumps({"sender_number": "+1", "receiver_number": board.number, "message": "a\x00b"}).encode(),
        qos=1,
    ).wait_for_publish(5)

    message_id = queue_message(db_session, board.sim_id)
    wait_state(db_session, message_id, "delivered")
    assert board.worker.counters.received == 0
