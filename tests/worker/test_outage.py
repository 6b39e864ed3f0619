"""What the worker learns from the modem survives a database outage, and a
restarted worker settles its own claims at once (docs/reliability.md).

The emulator's `sent` list is the ledger: what the modem really transmitted."""

from __future__ import annotations

import collections
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from support.pg_proxy import CommitLosingProxy
from support.private_postgres import PrivatePostgres

from smsgw_common.models import MessageEvent, utcnow
from smsgw_common.queue import DB_LOST_UNSENT, RESTARTED_IN_DOUBT
from smsgw_worker import pdu as pdu_codec
from smsgw_worker.atmodem import ModemEvent
from smsgw_worker.worker.journal import PDU, SENT, UNWRITTEN, Journal
from smsgw_worker.worker.replay import SENT_LATE

from .worker_harness import Rig, wait_for


@pytest.fixture(scope="module")
def private_pg():
    pg = PrivatePostgres()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def outage_db(private_pg):
    from smsgw_api.migrate import upgrade

    url = private_pg.create_database(f"smsgw_outage_{secrets.token_hex(4)}")
    upgrade(url)
    return url


def transmitted(rig: Rig) -> collections.Counter[str]:
    """How many times the modem sent each text."""
    return collections.Counter(record["text"] for record in rig.emulator.sent)


def on_sim(rig: Rig) -> list[str]:
    """Texts of the received SMS the SIM still holds."""
    return [m["decoded"].text for m in rig.emulator.stored_messages() if isinstance(m["decoded"], pdu_codec.Deliver)]


def history(rig: Rig, message_id: int) -> list[tuple[str, str | None]]:
    with rig.Session() as s:
        return [
            (e.state, e.detail)
            for e in s.scalars(
                select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
            )
        ]


HEARD_LATER = timedelta(seconds=3)  # well past the state the +CMGS itself may bring


def test_a_reference_and_a_report_learned_while_postgres_is_down_end_delivered_not_unknown(
    private_pg, outage_db, mqtt_prefix, tmp_path
):
    # The production lease: nothing here may wait for it to run out.
    rig = Rig(
        outage_db,
        mqtt_prefix,
        link=str(tmp_path / "ttyOUT"),
        emulator_kw={"send_latency": 1.0, "report_delay": 0.5},
        lease_seconds=300.0,
    )
    try:
        ids = [rig.queue_sms(f"outage {n} {secrets.token_hex(3)}") for n in range(3)]
        rig.start_worker()
        # The first PDU is written and its +CMGS not back yet: the database goes.
        wait_for(lambda: any(p.status == "submitting" for p in rig.parts(ids[0])), 15, lambda: "a part in flight")
        private_pg.stop_immediately()
        stopped, down_at = time.monotonic(), datetime.now(UTC)
        inbound_text = f"received during the outage {secrets.token_hex(3)}"
        try:
            rig.emulator.wait_sent(1, timeout=10)  # +CMGS came, then its +CDS, all while Postgres was down
            rig.emulator.inject_sms("+15550002222", inbound_text)  # stored on the SIM, announced by +CMTI
            # The broker still hears the modem throughout, and what its journal holds.
            rig.mqtt.wait(
                rig.topics.state(rig.modem_id),
                lambda p: p.get("journal_backlog", 0) >= 1 and datetime.fromisoformat(p["ts"]) > down_at + HEARD_LATER,
                timeout=10,
            )
            time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
            # Not deleted from the SIM while the database cannot hold it.
            assert on_sim(rig) == [inbound_text], "deleted from the SIM before the database held it"
        finally:
            private_pg.start()
        restarted = time.monotonic()
        rig.engine.dispose()  # the test's own connections died with the server
        for message_id in ids:
            rig.wait_state(message_id, "delivered", timeout=30)
        settled = time.monotonic() - restarted
        assert settled < 20, f"the outage's messages took {settled:.1f} s after Postgres came back"
        states = [state for i in ids for state, _ in history(rig, i)]
        assert "unknown" not in states
        # Recorded from the journal, with a history that says so.
        assert ("sent", SENT_LATE) in history(rig, ids[0])
        # Each transmitted exactly once.
        texts = [rig.message(i).message for i in ids]
        assert all(transmitted(rig)[t] == 1 for t in texts), transmitted(rig)
        assert rig.worker is not None and rig.worker.context.journal.pending() == []
        wait_for(lambda: [m.message for m in rig.inbound()] == [inbound_text], 20, "the SMS received in the outage")
        wait_for(lambda: on_sim(rig) == [], 20, "the SIM emptied once the database has it")
    finally:
        rig.close()


def test_a_report_read_while_the_port_is_being_reopened_is_recorded(database_url, mqtt_prefix, tmp_path):
    # No report of the emulator's own: the one below is the only one.
    rig = Rig(database_url, mqtt_prefix, link=str(tmp_path / "ttyGEN"), emulator_kw={"report_delay": 3600})
    try:
        message_id = rig.queue_sms("report across a reopen")
        worker = rig.start_worker()
        rig.wait_state(message_id, "sent")
        (part,) = rig.parts(message_id)
        now = datetime.now(UTC).replace(microsecond=0)
        report = pdu_codec.encode_status_report(part.reference, "+15550001111", 0, now, now, smsc="+15550000000")
        stale = worker.context.generation - 1  # read from the link before the last reopen
        worker.lifecycle._modem_event(ModemEvent("report", "+CDS: 25", pdu=report), stale)
        rig.wait_state(message_id, "delivered", timeout=10)
    finally:
        rig.close()


def test_a_sent_fact_in_the_journal_turns_unknown_into_sent_once_however_often_it_is_replayed(
    database_url, mqtt_prefix, tmp_path
):
    rig = Rig(database_url, mqtt_prefix, link=str(tmp_path / "ttyREP"), emulator_kw={"report_delay": 3600})
    try:
        message_id = rig.queue_sms("known after all")
        # What a worker that lost the database, then its lease, leaves behind:
        # the part `submitting`, the message `unknown` (the sweep), the
        # +CMGS in its journal, twice (an `applied` line lost in a crash).
        from smsgw_common import queue as message_queue
        from smsgw_common.models import Message, MessagePart

        with rig.Session.begin() as s:
            msg = s.get(Message, message_id)
            msg.segments = 1
            s.add(MessagePart(message_id=message_id, seq=1, sim_card_id=rig.sim_card_id, status="submitting"))
            message_queue.record(s, msg, "unknown", source="sweeper", detail="lease expired")
        part_id = rig.parts(message_id)[0].id
        journal = Journal(rig.settings.journal_dir, rig.settings.journal_max_bytes)
        for _ in range(2):
            journal.append(
                SENT, message_id=message_id, part_id=part_id, part_seq=1, reference=42, at="2026-01-01T00:00:00"
            )
        journal.close()

        rig.start_worker()
        rig.wait_state(message_id, "sent", timeout=10)
        wait_for(lambda: rig.worker.context.journal.pending() == [], 10, "the journal replayed")
        (part,) = rig.parts(message_id)
        assert (part.status, part.reference) == ("sent", 42)
        assert [state for state, _ in history(rig, message_id)].count("sent") == 1
        assert rig.emulator.sent == []  # known, so never sent again
    finally:
        rig.close()


def test_a_worker_killed_mid_batch_comes_back_and_sends_the_rest_within_seconds_without_a_duplicate(
    database_url, mqtt_prefix, tmp_path
):
    rig = Rig(database_url, mqtt_prefix, link=str(tmp_path / "ttyKILL"), emulator_kw={"send_latency": 0.3})
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        MQTT_HOST="127.0.0.1",
        MQTT_PORT="1883",
        MQTT_PREFIX=mqtt_prefix,
        MODEM_ID=rig.modem_id,
        MODEM_DEVICE=rig.emulator.device,
        JOURNAL_DIR=str(tmp_path / "journal"),
        WORKER_CLAIM_INTERVAL="0.3",
        WORKER_CLAIM_BATCH="10",
        WORKER_LEASE_SECONDS="300",  # the production lease: recovery must not wait for it
        WORKER_REFRESH_INTERVAL="1",
        LOG_LEVEL="INFO",
    )
    log_path = tmp_path / "worker.log"
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "smsgw_worker", "run"], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        return proc

    try:
        ids = [rig.queue_sms(f"batch {n} {secrets.token_hex(3)}") for n in range(8)]
        first = start()
        wait_for(
            lambda: sum(rig.message(i).status in ("sent", "delivered") for i in ids) >= 2,
            30,
            lambda: f"two sent ({[rig.message(i).status for i in ids]})",
        )
        # From now on a +CMGS takes 8 s: the kill lands 1-5 s into such a
        # send (its PDU written, no answer yet), after the report of the one
        # before it (0.1 s after its +CMGS) was read.
        rig.emulator.set_send_latency(8.0)

        def in_flight() -> bool:
            ages = [
                (utcnow() - p.sent_at).total_seconds() for i in ids for p in rig.parts(i) if p.status == "submitting"
            ]
            return any(1.0 <= age <= 5.0 for age in ages)

        wait_for(in_flight, 40, lambda: f"a slow send in flight ({[rig.message(i).status for i in ids]})")
        first.kill()
        first.wait(10)
        rig.emulator.set_send_latency(0.3)
        restarted = time.monotonic()
        start()

        def final() -> bool:
            return all(rig.message(i).status in ("delivered", "unknown", "failed") for i in ids)

        wait_for(final, 30, lambda: f"every message settled ({[rig.message(i).status for i in ids]})")
        took = time.monotonic() - restarted
        assert took < 20, f"the restarted worker took {took:.1f} s"
        states = {i: rig.message(i).status for i in ids}
        unknown = [i for i, state in states.items() if state == "unknown"]
        assert len(unknown) <= 1, states  # at most the one in flight at the kill
        for message_id in unknown:
            assert history(rig, message_id)[-1] == ("unknown", RESTARTED_IN_DOUBT)
        counts = transmitted(rig)
        texts = {i: rig.message(i).message for i in ids}
        assert all(counts[texts[i]] == 1 for i in ids if states[i] == "delivered"), counts
        assert all(counts[t] <= 1 for t in texts.values()), counts  # never twice
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        rig.close()


def test_a_fact_that_can_never_be_applied_is_set_aside_and_the_rest_recorded(database_url, mqtt_prefix, tmp_path):
    rig = Rig(database_url, mqtt_prefix, link=str(tmp_path / "ttyBAD"), emulator_kw={"report_delay": 3600})
    try:
        message_id = rig.queue_sms("behind a bad fact")
        from smsgw_common.models import Message, MessagePart

        with rig.Session.begin() as s:
            s.get(Message, message_id).segments = 1
            s.add(MessagePart(message_id=message_id, seq=1, sim_card_id=rig.sim_card_id, status="submitting"))
            s.get(Message, message_id).status = "sending"
        part_id = rig.parts(message_id)[0].id
        journal = Journal(rig.settings.journal_dir, rig.settings.journal_max_bytes)
        journal.append(SENT, message_id=message_id, reference=1)  # no part: a bug's, or a hand edit's
        journal.append(SENT, message_id=message_id, part_id=part_id, part_seq=1, reference=43, at="2026-01-01T00:00:00")
        journal.close()

        rig.start_worker()
        rig.wait_state(message_id, "sent", timeout=10)
        aside = os.path.join(rig.settings.journal_dir, "outcomes.rejected.jsonl")
        wait_for(lambda: os.path.exists(aside), 5, "the bad fact set aside")
        with open(aside) as f:
            assert "KeyError" in f.read()
        assert rig.thread.is_alive()
    finally:
        rig.close()


def test_past_its_bound_the_journal_holds_back_new_sends_until_it_is_below_again(database_url, mqtt_prefix, tmp_path):
    bound = 64 * 1024
    rig = Rig(
        database_url,
        mqtt_prefix,
        link=str(tmp_path / "ttyFULL"),
        emulator_kw={"report_delay": 3600},
        journal_max_bytes=bound,
    )
    try:
        rig.emulator.set_next_mr(200)  # the backlog's reports below name references 0-99: none of this send
        journal = Journal(rig.settings.journal_dir, bound)
        now = datetime.now(UTC).replace(microsecond=0)
        n = 0
        while journal.pending_bytes < 3 * bound:  # what a long outage left: reports nobody asked for
            report = pdu_codec.encode_status_report(n % 100, "+19990000000", 0, now, now, smsc="+15550000000")
            journal.append(PDU, pdu=report, origin="+CDS", sim_card_id=None)
            n += 1
        journal.close()
        message_id = rig.queue_sms("waits for room in the journal")

        worker = rig.start_worker()
        samples = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending = worker.context.journal.pending_bytes
            status = rig.message(message_id).status
            samples.append((pending, status))
            if status == "sent":
                break
            time.sleep(0.05)
        assert samples[-1][1] == "sent", samples[-5:]
        assert samples[0] == (samples[0][0], "queued") and samples[0][0] >= bound, samples[:3]
        first_claimed = next(pending for pending, status in samples if status != "queued")
        assert first_claimed < bound, f"sent with {first_claimed} bytes of facts pending (bound {bound})"
    finally:
        rig.close()


def test_a_commit_whose_answer_is_lost_before_a_send_requeues_the_message_instead_of_unknown(
    database_url, mqtt_prefix, tmp_path
):
    # The chaos tier's postgres_stop_10s found it: the part's `submitting`
    # row committed, the connection died before COMMIT's answer, so the
    # worker never wrote the PDU; on reconnect its own claim looked in doubt
    # and the message ended `unknown`, though it certainly never left.
    proxy = CommitLosingProxy(database_url)
    rig = Rig(proxy.url, mqtt_prefix, link=str(tmp_path / "ttyCUT"), lease_seconds=300.0)
    try:
        text = f"commit answer lost {secrets.token_hex(3)}"
        message_id = rig.queue_sms(text)
        proxy.arm(b"INSERT INTO message_parts")
        rig.start_worker()
        wait_for(lambda: proxy.cut_commits == 1, 15, "the COMMIT of the part row cut")
        rig.wait_state(message_id, "delivered", timeout=30)
        steps = history(rig, message_id)
        assert "unknown" not in [state for state, _ in steps], steps
        assert ("queued", DB_LOST_UNSENT) in steps
        assert transmitted(rig)[text] == 1
        assert rig.message(message_id).attempts == 1  # the send that never happened spent none
    finally:
        rig.close()
        proxy.close()


@pytest.mark.parametrize("same_submission", [True, False], ids=["that-submission", "a-later-submission"])
def test_an_unwritten_fact_undoes_only_the_submission_it_is_about(database_url, mqtt_prefix, tmp_path, same_submission):
    # An `unwritten` fact replayed again (its `applied` line lost in a crash)
    # after the part was submitted anew must leave that newer submission in
    # doubt: its PDU may be on the air.
    rig = Rig(database_url, mqtt_prefix, link=str(tmp_path / "ttyUNW"), lease_seconds=300.0)
    try:
        message_id = rig.queue_sms(f"unwritten {secrets.token_hex(3)}")
        from smsgw_common import queue as message_queue
        from smsgw_common.models import Message, MessagePart

        submitted = utcnow() - timedelta(minutes=1)
        with rig.Session.begin() as s:
            msg = s.get(Message, message_id)
            msg.segments, msg.attempts = 1, 1
            msg.worker_id, msg.lease_until = rig.settings.worker_id, utcnow() + timedelta(minutes=5)
            message_queue.record(s, msg, "sending", source=rig.settings.worker_id, at=submitted)
            s.add(
                MessagePart(
                    message_id=message_id, seq=1, sim_card_id=rig.sim_card_id, status="submitting", sent_at=submitted
                )
            )
        part_id = rig.parts(message_id)[0].id
        fact_at = submitted if same_submission else submitted - timedelta(seconds=30)
        journal = Journal(rig.settings.journal_dir, rig.settings.journal_max_bytes)
        journal.append(UNWRITTEN, message_id=message_id, part_id=part_id, at=fact_at.isoformat())
        journal.close()

        rig.start_worker()
        if same_submission:
            rig.wait_state(message_id, "delivered", timeout=20)
            assert len(rig.emulator.sent) == 1
        else:
            rig.wait_state(message_id, "unknown", timeout=20)
            assert (rig.parts(message_id)[0].status, rig.emulator.sent) == ("submitting", [])
            assert ("unknown", RESTARTED_IN_DOUBT) in history(rig, message_id)
        wait_for(lambda: rig.worker.context.journal.pending() == [], 10, "the journal replayed")
    finally:
        rig.close()


CUTS = pytest.mark.parametrize("forward", [True, False], ids=["answer-lost", "commit-lost"])


@CUTS
@pytest.mark.parametrize(
    ("after", "parts"),
    [(b"INSERT INTO messages", 1), (b"INSERT INTO inbound_parts", 2), (b"INSERT INTO messages", 2)],
    ids=["single", "concatenated-first-part", "concatenated-completion"],
)
def test_a_received_sms_whose_commit_is_cut_is_stored_once_and_leaves_the_sim(
    database_url, mqtt_prefix, tmp_path, after, parts, forward
):
    # The inbound side of a cut COMMIT: the row may be in, the worker cannot
    # tell. The SMS must stay on the SIM until a read finds it held, and
    # reading it again must not store it twice.
    proxy = CommitLosingProxy(database_url)
    rig = Rig(proxy.url, mqtt_prefix, link=str(tmp_path / "ttyIN"), lease_seconds=300.0)
    try:
        rig.start_worker()
        wait_for(lambda: rig.worker.context.started.is_set(), 15, "the modem up")
        text = f"received while the commit is cut {secrets.token_hex(3)} " + "x" * (200 if parts == 2 else 0)
        proxy.arm(after, forward=forward)
        rig.emulator.inject_sms("+15550003333", text.strip())
        wait_for(lambda: proxy.cut_commits == 1, 15, "the COMMIT cut")
        wait_for(lambda: on_sim(rig) == [], 30, "the SIM emptied once the database holds it")
        wait_for(lambda: [m.message for m in rig.inbound()] == [text.strip()], 10, "the SMS stored")
        rig.worker.context.rescan = True  # one more full read of the SIM: nothing left, nothing added
        time.sleep(3)
        assert [m.message for m in rig.inbound()] == [text.strip()]
        assert rig.inbound()[0].segments == parts
    finally:
        rig.close()
        proxy.close()


@pytest.mark.parametrize(
    ("after", "parts"),
    [
        (b"SKIP LOCKED", 1),  # the claim
        (b"UPDATE message_parts SET status = 'sent'", 1),  # the last segment's +CMGS with the message's `sent`
        (b"UPDATE message_parts SET status = 'sent'", 2),  # a first segment's +CMGS, the second still to go
        (b"UPDATE message_parts SET report_status", 1),  # the delivery report
    ],
    ids=["claim", "sent", "first-of-two-sent", "report"],
)
@CUTS
def test_every_outbound_commit_that_is_cut_ends_delivered_and_sent_once(
    database_url, mqtt_prefix, tmp_path, after, parts, forward
):
    # The worker knows the outcome in each of these (nothing sent yet, or the
    # modem's answer journaled before the commit): none may end `unknown`,
    # nor go out twice, whether the server committed or not.
    proxy = CommitLosingProxy(database_url)
    rig = Rig(proxy.url, mqtt_prefix, link=str(tmp_path / "ttyOUTC"), lease_seconds=300.0)
    try:
        text = f"lost answer {secrets.token_hex(3)} " + "y" * (200 if parts == 2 else 0)
        message_id = rig.queue_sms(text.strip())
        proxy.arm(after, forward=forward)
        rig.start_worker()
        wait_for(lambda: proxy.cut_commits == 1, 15, "the COMMIT cut")
        msg = rig.wait_state(message_id, "delivered", timeout=30)
        assert "unknown" not in [state for state, _ in history(rig, message_id)], history(rig, message_id)
        assert msg.segments == parts
        assert len(rig.emulator.sent) == parts, rig.emulator.sent  # each segment once
        assert sorted(p.seq for p in rig.parts(message_id)) == list(range(1, parts + 1))
        wait_for(lambda: rig.worker.context.journal.pending() == [], 10, "the journal replayed")
    finally:
        rig.close()
        proxy.close()
