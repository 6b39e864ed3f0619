"""The API refuses to start on a missing or placeholder secret."""

from __future__ import annotations

import pytest

from smsgw_api.core.settings import ApiSettings, SettingsError


def env(**kw):
    base = {"DATABASE_URL": "postgresql+psycopg2://u@127.0.0.1/db", "JWT_SECRET": "k" * 20 + "Zq9" * 10}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "secret,words",
    [
        (None, "not set"),
        ("changeme", "placeholder"),
        ("<your secret here>", "placeholder"),
        ("tooshort", "at least 32"),
    ],
)
def test_it_refuses_a_missing_weak_or_placeholder_jwt_secret(secret, words):
    with pytest.raises(SettingsError, match="JWT_SECRET") as exc:
        ApiSettings.from_env(env(JWT_SECRET=secret))
    assert words in str(exc.value)


def test_it_reads_the_secret_from_a_file(tmp_path):
    path = tmp_path / "jwt"
    path.write_text("f" * 16 + "Secret-From-File-0123456789\n")
    s = ApiSettings.from_env(env(JWT_SECRET=None, JWT_SECRET_FILE=str(path)))
    assert s.jwt_secret == "f" * 16 + "Secret-From-File-0123456789"


@pytest.mark.parametrize(
    "name,value",
    [
        ("MAX_SEGMENTS", "0"),
        ("MAX_SEGMENTS", "ten"),
        ("JWT_TTL_HOURS", "-1"),
        ("CORS_ALLOWED_ORIGINS", "*"),
        ("PAGE_SIZE_DEFAULT", "500"),
        ("NODE_UNREACHABLE_SECONDS", "5"),
        ("NODE_UNREACHABLE_SECONDS", "86400"),
    ],
)
def test_it_refuses_invalid_values_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name.split("_")[0]):
        ApiSettings.from_env(env(**{name: value}))


def test_defaults_are_the_documented_ones():
    s = ApiSettings.from_env(env())
    assert (s.jwt_ttl_hours, s.max_segments, s.max_page_size, s.cors_allowed_origins) == (24, 10, 200, ())
    assert s.node_unreachable_seconds == 45
