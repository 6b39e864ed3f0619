"""Per-package resources on the machine's real services: a migrated Postgres
database (dropped after), an MQTT topic prefix and a Redis database reserved
for the package alone, so that neither concurrent runs nor the tiers of one
run see (or wipe) each other's data.

The fixtures here are imported by each tier's conftest.py, which scopes
"package" to that tier.

Redis: databases 1-15 of the test Redis are handed out by a lock key in
database 0 (`smsgw-tests:redis-db:<n>`, SET NX with an expiry that a
heartbeat renews). A package flushes only the database whose lock it holds,
so two runs on one machine never flush each other's keys. Key prefixes alone
would make isolation depend on every key any service writes, now or later,
carrying the deployment prefix (the login rate limiter's did not, on this
branch's base), and a killed run's keys would stay behind for good; a
database of its own isolates a package whatever its code writes, and is
emptied by its next holder. Database 0 is left to whatever runs natively.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import secrets
import sys
import threading
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
from sqlalchemy.engine import make_url

from .waits import wait_until

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TEST_MQTT_PORT", "1883"))
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")

REDIS_LOCK_PREFIX = "smsgw-tests:redis-db:"
REDIS_TEST_DBS = range(1, 16)
# Long enough to survive a stalled heartbeat under load, short enough that a
# killed run's databases come back within minutes.
REDIS_LOCK_TTL_MS = 120_000

# --- Postgres -----------------------------------------------------------------


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


# --- Redis --------------------------------------------------------------------

# Compare-and-act on the lock: only its holder renews or releases it.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class RedisReservation:
    """One Redis database held by one owner until release()."""

    def __init__(self, base_url: str, db: int, token: str, ttl_ms: int):
        self.base_url, self.db, self.token, self.ttl_ms = base_url, db, token, ttl_ms
        self.key = f"{REDIS_LOCK_PREFIX}{db}"
        self._locks = redis_lib.Redis.from_url(f"{base_url}/0")
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew_until_released, name=f"redis-db-{db}", daemon=True)
        self._heartbeat.start()

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.db}"

    def held(self) -> bool:
        return self._locks.get(self.key) == self.token.encode()

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.ttl_ms / 4000):
            try:
                if not self._locks.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
                    log.error("lost the lock on Redis database %d (%s)", self.db, self.token)
                    return
            except redis_lib.RedisError:
                log.exception("renewing the lock on Redis database %d", self.db)

    def release(self) -> None:
        """Flush the database, then give it back; neither if the lock was lost
        meanwhile (the database is someone else's by then)."""
        self._stop.set()
        self._heartbeat.join(timeout=5)
        if self.held():
            redis_lib.Redis.from_url(self.url).flushdb()
            self._locks.eval(_RELEASE, 1, self.key, self.token)
        self._locks.close()


def reserve_redis_db(
    owner: str, base_url: str = REDIS_BASE, ttl_ms: int = REDIS_LOCK_TTL_MS, timeout: float = 60.0
) -> RedisReservation:
    """Take a free database among 1-15 (waiting up to `timeout` s when all are
    held) and empty it: anything left there belongs to a holder whose lock
    expired."""
    token = f"{owner}:{os.getpid()}:{secrets.token_hex(4)}"
    locks = redis_lib.Redis.from_url(f"{base_url}/0")
    dbs = list(REDIS_TEST_DBS)
    random.shuffle(dbs)  # concurrent runs starting together try different databases first

    def take() -> int | None:
        return next((db for db in dbs if locks.set(f"{REDIS_LOCK_PREFIX}{db}", token, nx=True, px=ttl_ms)), None)

    def holders() -> str:
        return ", ".join(f"{db}: {locks.get(f'{REDIS_LOCK_PREFIX}{db}')!r}" for db in REDIS_TEST_DBS)

    try:
        db = wait_until(take, timeout, 0.5, lambda: f"a free Redis test database (held: {holders()})")
    finally:
        locks.close()
    reservation = RedisReservation(base_url, db, token, ttl_ms)
    redis_lib.Redis.from_url(reservation.url).flushdb()
    return reservation


# --- fixtures -----------------------------------------------------------------


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
    reservation = reserve_redis_db(package_id)
    try:
        yield reservation.url
    finally:
        reservation.release()


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
