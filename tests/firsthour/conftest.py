"""The operator's first hour: what the API says when something is missing
(no modem, none online, no active SIM) and what the sweeper does so that
nothing waits forever. A tier of its own: its first test needs a database
with no modem at all, which the API tier's shared database never is.

Personas as in tests/api (support/app_fixtures.py): Alice is an admin, Bob a
user, Charlie a viewer.
"""

from __future__ import annotations

from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
from support.app_fixtures import alice, app, bob, charlie, client, engine, env  # noqa: F401  (one set per tier)
