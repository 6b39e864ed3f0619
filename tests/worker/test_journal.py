"""The outcome journal's file (smsgw_worker/worker/journal.py): what it keeps
across a restart, a torn last line, its bound."""

from __future__ import annotations

import pytest

from smsgw_worker.worker.journal import FILE_NAME, PDU, SENT, Journal, JournalError, encode_line

KIB = 1024


def test_a_fact_not_marked_applied_comes_back_after_a_restart(tmp_path):
    journal = Journal(tmp_path, 64 * KIB)
    first = journal.append(SENT, message_id=7, part_id=70, part_seq=1, reference=12, at="2026-01-01T00:00:00")
    second = journal.append(PDU, pdu="0011AA", origin="+CDS")
    journal.applied(first)
    journal.close()

    again = Journal(tmp_path, 64 * KIB)
    pending = again.pending()
    assert [(e.kind, e.data) for e in pending] == [(PDU, {"pdu": "0011AA", "origin": "+CDS"})]
    assert pending[0].seq == second.seq
    # New facts never reuse a number an earlier run wrote.
    assert again.append(SENT, message_id=8, part_id=80, part_seq=1, reference=13, at="x").seq > second.seq


def test_the_file_is_emptied_once_everything_is_applied(tmp_path):
    journal = Journal(tmp_path, 64 * KIB)
    entries = [journal.append(SENT, message_id=n, part_id=n, part_seq=1, reference=n, at="x") for n in range(5)]
    assert (tmp_path / FILE_NAME).stat().st_size > 0
    for entry in entries:
        journal.applied(entry)
    assert (tmp_path / FILE_NAME).stat().st_size == 0
    assert journal.pending() == []
    journal.close()
    assert Journal(tmp_path, 64 * KIB).pending() == []


def test_a_line_torn_by_a_power_cut_is_dropped_and_the_rest_kept(tmp_path):
    journal = Journal(tmp_path, 64 * KIB)
    journal.append(SENT, message_id=1, part_id=10, part_seq=1, reference=5, at="x")
    journal.close()
    whole = encode_line({"seq": 2, "kind": SENT, "data": {"message_id": 2, "part_id": 20}})
    with open(tmp_path / FILE_NAME, "ab") as f:
        f.write(whole[: len(whole) // 2])  # the power went mid-write

    again = Journal(tmp_path, 64 * KIB)
    assert [e.data["message_id"] for e in again.pending()] == [1]
    # What follows the torn line is readable: the tail was cut off.
    again.append(SENT, message_id=3, part_id=30, part_seq=1, reference=6, at="x")
    again.close()
    assert [e.data["message_id"] for e in Journal(tmp_path, 64 * KIB).pending()] == [1, 3]


def test_a_line_whose_checksum_fails_is_skipped_not_fatal(tmp_path):
    journal = Journal(tmp_path, 64 * KIB)
    journal.append(SENT, message_id=1, part_id=10, part_seq=1, reference=5, at="x")
    journal.append(SENT, message_id=2, part_id=20, part_seq=1, reference=6, at="x")
    journal.close()
    data = (tmp_path / FILE_NAME).read_bytes()
    (tmp_path / FILE_NAME).write_bytes(data.replace(b'"reference":5', b'"reference":9'))  # a flipped bit
    assert [e.data["message_id"] for e in Journal(tmp_path, 64 * KIB).pending()] == [2]


def test_past_its_bound_the_journal_says_it_is_full_and_compacts_what_was_applied(tmp_path):
    journal = Journal(tmp_path, 64 * KIB)
    entries = []
    while not journal.full:
        entries.append(journal.append(PDU, pdu="AB" * 100, origin="+CDS"))
    assert journal.size >= 64 * KIB
    # Half recorded in the database: the space they took comes back.
    for entry in entries[: len(entries) // 2 + 1]:
        journal.applied(entry)
    assert not journal.full
    assert journal.size < 40 * KIB
    journal.close()
    assert len(Journal(tmp_path, 64 * KIB).pending()) == len(entries) - (len(entries) // 2 + 1)


def test_an_unwritable_journal_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(JournalError, match="cannot open the outcome journal"):
        Journal(blocker / "journal", 64 * KIB)


BASE_ENV = {
    "DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/none",
    "MQTT_HOST": "127.0.0.1",
    "MODEM_ID": "modem-7",
    "MODEM_DEVICE": "/dev/null",
}


def test_the_journal_lives_in_a_directory_per_modem_under_the_worker_data_dir():
    from smsgw_worker.settings import WorkerSettings

    assert WorkerSettings.from_env(BASE_ENV).journal_dir == "/var/lib/smsgw-worker/modem-7"
    assert WorkerSettings.from_env({**BASE_ENV, "WORKER_DATA_DIR": "/data"}).journal_dir == "/data/modem-7"
    assert WorkerSettings.from_env({**BASE_ENV, "JOURNAL_DIR": "/j"}).journal_dir == "/j"


def test_a_journal_bound_below_64_kib_is_refused():
    from smsgw_common.settings import SettingsError
    from smsgw_worker.settings import WorkerSettings

    with pytest.raises(SettingsError, match="JOURNAL_MAX_BYTES must be at least 65536"):
        WorkerSettings.from_env({**BASE_ENV, "JOURNAL_MAX_BYTES": "4096"})


def test_a_worker_whose_journal_cannot_be_written_refuses_to_start(tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**BASE_ENV, "JOURNAL_DIR": str(blocker / "journal"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "smsgw_worker", "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "cannot open the outcome journal" in done.stderr and "JOURNAL_DIR" in done.stderr
