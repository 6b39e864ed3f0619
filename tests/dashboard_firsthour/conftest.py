"""The dashboard tier's browser, nginx and API (tests/dashboard/conftest.py)
on a database of its own: the modems page is first seen with no modem at
all, which the shared dashboard tier's database never is."""

from dashboard.conftest import (  # noqa: F401  (fixtures)
    alice_api,
    api_env,
    api_server,
    browser,
    modem,
    nginx,
    page,
    personas,
    playwright_instance,
)
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
