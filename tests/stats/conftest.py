"""Fixtures of the stats tier. Its figures must be exact ("3 messages
today"), so it gets a database of its own instead of the run's shared one,
where other tiers' messages would be counted too."""
from __future__ import annotations

from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
import os

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from smsgw_common.db import make_engine

from .tests_stats_app import make as make_app

JWT_SECRET = "stats-tier-test-jwt-secret-0123456789abcdef"
# The same sources as tests/conftest.py (not imported: other tiers' conftest
# modules share its module name).
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TEST_MQTT_PORT", "1883"))


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="package")
def stats_database_url(run_id):
    from smsgw_api.migrate import upgrade

    name = f"smsgw_test_{run_id}_stats"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg2", database=name)
    url = url.render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="package")
def engine(stats_database_url):
    engine = make_engine(stats_database_url, pool_size=2, max_overflow=2)
    yield engine
    engine.dispose()


@pytest.fixture
def clean(engine):
    """Empty tables before a test; users and keys stay (personas are session-wide)."""
    with engine.begin() as conn:
        conn.execute(text(
            "TRUNCATE stat_samples, message_events, message_parts, messages, sim_cards, modems "
            "RESTART IDENTITY CASCADE"
        ))
    return engine


@pytest.fixture
def stats_env(service_env, stats_database_url) -> dict[str, str]:
    return {**service_env, "DATABASE_URL": stats_database_url}


def _api_settings(env: dict):
    from smsgw_api.settings import ApiSettings

    return ApiSettings.from_env({**env, "JWT_SECRET": JWT_SECRET})


@pytest.fixture(scope="package")
def api_app(service_env, stats_database_url):
    mp = pytest.MonkeyPatch()
    # Every request re-reads the database, so a test sees what it just inserted.
    mp.setenv("METRICS_CACHE_SECONDS", "0")
    mp.setenv("STATISTICS_CACHE_SECONDS", "0")
    try:
        app = make_app(_api_settings({**service_env, "DATABASE_URL": stats_database_url}))
        yield app
    finally:
        mp.undo()


@pytest.fixture(scope="package")
def vera_key(engine, api_app) -> str:
    """Vera is a viewer: the weakest role, which is all /api/statistics needs."""
    from smsgw_api.security import new_api_key

    key, prefix, digest = new_api_key()
    with engine.begin() as conn:
        user_id = conn.execute(text(
            "INSERT INTO users (username, password_hash, role) VALUES ('vera', 'x', 'viewer') RETURNING id"
        )).scalar()
        conn.execute(
            text("INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES (:u, 'test', :p, :h)"),
            {"u": user_id, "p": prefix, "h": digest},
        )
    return key


@pytest.fixture
def client(api_app):
    return api_app.test_client()
