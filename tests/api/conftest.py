"""API fixtures: the app on the run's fresh database, and three personas.

Alice is an admin, Bob a user (sends and reads), Charlie a viewer (reads).
Each has an API key (`alice.headers`) and can log in with a password.
"""
from __future__ import annotations

from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
import pytest
from .api_support import api_env, make_persona, make_sim
from sqlalchemy import create_engine
from sqlalchemy.orm import Session


@pytest.fixture(scope="package")
def env(database_url, redis_url, mqtt_prefix):
    return api_env(database_url, redis_url, mqtt_prefix)


@pytest.fixture(scope="package")
def app(env):
    from smsgw_api import create_app

    application = create_app({"ENV": env, "TESTING": True})
    yield application
    from smsgw_api.extensions import bus, db

    bus.stop(application)
    db.dispose(application)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture(scope="package")
def engine(database_url):
    eng = create_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def session(engine):
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture(scope="package")
def alice(engine):
    return make_persona(engine, "alice", "admin")


@pytest.fixture(scope="package")
def bob(engine):
    return make_persona(engine, "bob", "user")


@pytest.fixture(scope="package")
def charlie(engine):
    return make_persona(engine, "charlie", "viewer")


@pytest.fixture()
def sim(engine):
    """A fresh online SIM, for tests that pin it (other tests' SIMs stay out of the way)."""
    return make_sim(engine)
