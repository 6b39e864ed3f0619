"""Fixtures that give each test package (tests/<tier>/) its own resources: a
migrated Postgres database (dropped after), an MQTT topic prefix and a Redis
database, so that neither test runs nor the tiers of one run see each other's
data. Each tier's conftest imports them, which scopes "package" to that tier.
"""
from __future__ import annotations

import itertools
import os
import secrets
import sys
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TEST_MQTT_PORT", "1883"))
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _admin_conn():
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    return conn


def create_database(name: str) -> str:
    conn = _admin_conn()
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg2", database=name)
    return url.render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    conn = _admin_conn()
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@pytest.fixture(scope="session")
def run_id() -> str:
    return f"{os.getpid()}_{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


_package_seq = itertools.count(1)


@pytest.fixture(scope="package")
def package_id(run_id) -> str:
    return f"{run_id}_{next(_package_seq)}"


@pytest.fixture(scope="package")
def database_url(package_id):
    """A migrated database of its own for this test package."""
    from smsgw_api.migrate import upgrade

    name = f"smsgw_test_{package_id}"
    url = create_database(name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="package")
def mqtt_prefix(package_id) -> str:
    return f"smsgw-test-{package_id}/"


@pytest.fixture(scope="package")
def redis_url(package_id):
    # Databases 1..15 are used by tests; 0 is left to whatever runs natively.
    db = 1 + (os.getpid() + next(_package_seq)) % 15
    url = f"{REDIS_BASE}/{db}"
    redis_lib.Redis.from_url(url).flushdb()
    yield url
    redis_lib.Redis.from_url(url).flushdb()


@pytest.fixture(scope="package")
def service_env(database_url, mqtt_prefix, redis_url) -> dict[str, str]:
    """Environment for a service process started by a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "REDIS_"))}
    env.update(
        DATABASE_URL=database_url,
        MQTT_HOST=MQTT_HOST,
        MQTT_PORT=str(MQTT_PORT),
        MQTT_PREFIX=mqtt_prefix,
        REDIS_URL=redis_url,
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env
