"""Every tier gets its own database, MQTT prefix and Redis database: the
fixtures live in support/services.py and each tier's conftest.py imports
them, which scopes "package" to that tier. Imported here too for tests/ itself."""

from support.services import (  # noqa: F401
    database_url,
    mqtt_prefix,
    package_id,
    python,
    redis_url,
    run_id,
    service_env,
)
