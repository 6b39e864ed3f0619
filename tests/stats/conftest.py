"""Fixtures of the stats tier. Its figures must be exact ("3 messages
today"), so it relies on the database of its own that shared_fixtures gives
each tier: no other tier's messages are counted."""

from __future__ import annotations

import pytest
from shared_fixtures import (  # noqa: F401  (one set per tier)
    MQTT_HOST,
    MQTT_PORT,
    database_url,
    mqtt_prefix,
    package_id,
    redis_url,
    service_env,
)
from sqlalchemy import text

from smsgw_common.db import make_engine

from .tests_stats_app import make as make_app

JWT_SECRET = "stats-tier-test-jwt-secret-0123456789abcdef"


@pytest.fixture(scope="package")
def engine(database_url):
    engine = make_engine(database_url, pool_size=2, max_overflow=2)
    yield engine
    engine.dispose()


@pytest.fixture
def clean(engine):
    """Empty tables before a test; users and keys stay (personas are session-wide)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE stat_samples, message_events, message_parts, messages, sim_cards, modems "
                "RESTART IDENTITY CASCADE"
            )
        )
    return engine


def _api_settings(env: dict):
    from smsgw_api.core.settings import ApiSettings

    return ApiSettings.from_env({**env, "JWT_SECRET": JWT_SECRET})


@pytest.fixture(scope="package")
def api_app(service_env):
    mp = pytest.MonkeyPatch()
    # Every request re-reads the database, so a test sees what it just inserted.
    mp.setenv("METRICS_CACHE_SECONDS", "0")
    mp.setenv("STATISTICS_CACHE_SECONDS", "0")
    try:
        app = make_app(_api_settings(service_env))
        yield app
    finally:
        mp.undo()


@pytest.fixture(scope="package")
def vera_key(engine, api_app) -> str:
    """Vera is a viewer: the weakest role, which is all /api/statistics needs."""
    from smsgw_api.core.security import new_api_key

    key, prefix, digest = new_api_key()
    with engine.begin() as conn:
        user_id = conn.execute(
            text("INSERT INTO users (username, password_hash, role) VALUES ('vera', 'x', 'viewer') RETURNING id")
        ).scalar()
        conn.execute(
            text("INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES (:u, 'test', :p, :h)"),
            {"u": user_id, "p": prefix, "h": digest},
        )
    return key


@pytest.fixture
def client(api_app):
    return api_app.test_client()
