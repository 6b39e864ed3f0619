"""`make native` on its own database, MQTT prefix and Redis database."""

from shared_fixtures import mqtt_prefix, package_id, python, redis_url, run_id  # noqa: F401  (one set per tier)
