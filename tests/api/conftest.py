"""API fixtures: the app on the run's fresh database, and three personas
(support/app_fixtures.py): Alice is an admin, Bob a user (sends and reads),
Charlie a viewer (reads). Each has an API key (`alice.headers`) and can log
in with a password.
"""

from __future__ import annotations

import pytest
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
from sqlalchemy.orm import Session
from support.app_fixtures import alice, app, bob, charlie, client, engine, env  # noqa: F401  (one set per tier)

from .api_support import make_sim


@pytest.fixture
def session(engine):
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def sim(engine):
    """A fresh online SIM, for tests that pin it (other tests' SIMs stay out of the way)."""
    return make_sim(engine)
