"""Seed import fixtures: the API on this tier's own database, the stack's
own admin (named `admin`, as the bootstrap admin is), and a seed database
built here with the seed's schema."""

from __future__ import annotations

import pytest
from shared_fixtures import database_url, mqtt_prefix, package_id, python, redis_url, service_env  # noqa: F401
from support.api import make_persona
from support.app_fixtures import app, client, engine, env  # noqa: F401  (one set per tier)

from .seed_support import build_seed


@pytest.fixture(scope="package")
def stack_admin(engine):
    return make_persona(engine, "admin", "admin")


@pytest.fixture(scope="package")
def seed_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "sms_gateway.db"
    build_seed(path)
    return path
