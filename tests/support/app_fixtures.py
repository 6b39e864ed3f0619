"""The API app on a tier's own database, and its personas, as fixtures: a
tier's conftest imports the ones it uses (which scopes "package" to that tier,
as with shared_fixtures).

Alice is an admin, Bob a user (sends and reads), Charlie a viewer (reads).
Each has an API key (`alice.headers`) and can log in with a password.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from support.api import api_env, make_persona


@pytest.fixture(scope="package")
def env(database_url, redis_url, mqtt_prefix):
    return api_env(database_url, redis_url, mqtt_prefix)


@pytest.fixture(scope="package")
def app(env):
    from smsgw_api import create_app
    from smsgw_api.core.extensions import bus, db

    application = create_app({"ENV": env, "TESTING": True})
    yield application
    bus.stop(application)
    db.dispose(application)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="package")
def engine(database_url):
    eng = create_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="package")
def alice(engine):
    return make_persona(engine, "alice", "admin")


@pytest.fixture(scope="package")
def bob(engine):
    return make_persona(engine, "bob", "user")


@pytest.fixture(scope="package")
def charlie(engine):
    return make_persona(engine, "charlie", "viewer")
