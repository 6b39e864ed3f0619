"""Kept for the conftests and tests that import from here: the per-package
resources now live in support/services.py."""

from support.services import (  # noqa: F401
    MQTT_HOST,
    MQTT_PORT,
    PG_ADMIN_URL,
    REDIS_BASE,
    ROOT,
    create_database,
    database_url,
    drop_database,
    mqtt_prefix,
    package_id,
    python,
    redis_url,
    run_id,
    service_env,
)
