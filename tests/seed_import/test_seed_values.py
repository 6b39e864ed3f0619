"""Reading the seed's values: Werkzeug hashes, times, numbers, ids."""

from __future__ import annotations

from datetime import UTC, datetime

from werkzeug.security import generate_password_hash

from smsgw_api.domain.accounts import verify_werkzeug_pbkdf2
from smsgw_api.seed_import.seed import canonical_id, checkable, sim_number, utc

from .seed_support import werkzeug_pbkdf2


def test_the_pbkdf2_check_agrees_with_werkzeug():
    for method in ("pbkdf2:sha256:1000", "pbkdf2:sha512:1000", "pbkdf2:sha1:1000"):
        stored = generate_password_hash("s3cret words", method=method)
        assert verify_werkzeug_pbkdf2(stored, "s3cret words") is True
        assert verify_werkzeug_pbkdf2(stored, "s3cret wordz") is False
    assert verify_werkzeug_pbkdf2(werkzeug_pbkdf2("pw", "salt", 1000), "pw") is True
    assert verify_werkzeug_pbkdf2(generate_password_hash("pw", method="scrypt"), "pw") is None
    assert verify_werkzeug_pbkdf2("pbkdf2:nohash:1000$salt$00", "pw") is None


def test_only_hashes_login_can_check_are_kept():
    assert checkable(werkzeug_pbkdf2("pw", "salt", 1000))
    assert checkable(generate_password_hash("pw", method="scrypt"))
    for stored in (None, "", "sha256$salt$00", "plain text", "pbkdf2:nohash:1000$salt$00", "x" * 300):
        assert not checkable(stored), stored


def test_naive_seed_times_are_utc():
    assert utc("2025-03-01 08:15:30.123456") == datetime(2025, 3, 1, 8, 15, 30, 123456, tzinfo=UTC)
    assert utc("2025-03-01T10:15:30+02:00") == datetime(2025, 3, 1, 8, 15, 30, tzinfo=UTC)
    assert utc(None) is None and utc("yesterday") is None


def test_sim_numbers_become_e164_and_ids_one_spelling():
    assert sim_number("255 700-000-002") == "+255700000002"
    assert sim_number("00255700000002") == "+255700000002"
    assert sim_number("SIM one") is None
    assert canonical_id("6F1C2B7E2D434A8E9D3B1F2E3D4C5B6A") == "6f1c2b7e-2d43-4a8e-9d3b-1f2e3d4c5b6a"
    assert canonical_id(7) == "7"
