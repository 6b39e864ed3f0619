import logging

import pytest

from smsgw_common import jsonlog
from smsgw_common.settings import (
    CommonSettings,
    DatabaseSettings,
    MqttSettings,
    RedisSettings,
    SettingsError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_log_level,
    env_secret,
    env_str,
)


def test_a_missing_secret_is_refused_with_its_name():
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        env_secret("JWT_SECRET", environ={})


@pytest.mark.parametrize("value", ["changeme", "CHANGE_ME_please", "secret", "<your-secret>", "password"])
def test_a_placeholder_secret_is_refused(value):
    with pytest.raises(SettingsError, match="placeholder"):
        env_secret("JWT_SECRET", environ={"JWT_SECRET": value})


def test_a_secret_can_come_from_a_file(tmp_path):
    path = tmp_path / "jwt"
    path.write_text("s3cr3t-value-from-a-docker-secret\n")
    assert env_secret("JWT_SECRET", environ={"JWT_SECRET_FILE": str(path)}) == "s3cr3t-value-from-a-docker-secret"


def test_an_unreadable_secret_file_is_named_in_the_error(tmp_path):
    with pytest.raises(SettingsError, match="JWT_SECRET_FILE"):
        env_secret("JWT_SECRET", environ={"JWT_SECRET_FILE": str(tmp_path / "missing")})


def test_a_too_short_secret_is_refused():
    with pytest.raises(SettingsError, match="at least 32"):
        env_secret("JWT_SECRET", environ={"JWT_SECRET": "short-but-real"}, min_length=32)


def test_typed_values_are_checked():
    with pytest.raises(SettingsError, match="MQTT_PORT must be an integer"):
        env_int("MQTT_PORT", 1883, environ={"MQTT_PORT": "eighteen"})
    with pytest.raises(SettingsError, match="boolean"):
        env_bool("LOG_JSON", True, environ={"LOG_JSON": "maybe"})
    assert env_bool("LOG_JSON", True, environ={"LOG_JSON": "off"}) is False


def test_the_database_url_is_built_from_parts_with_the_password_quoted():
    s = DatabaseSettings.from_env({"POSTGRES_PASSWORD": "p@ss/word:x", "POSTGRES_HOST": "db"})
    assert s.url == "postgresql+psycopg2://smsgw:p%40ss%2Fword%3Ax@db:5432/smsgw"


def test_urls_that_carry_a_password_can_come_from_files(tmp_path):
    db_file, redis_file = tmp_path / "db", tmp_path / "redis"
    db_file.write_text("postgresql+psycopg2://gw:s3cret@db:5432/gw\n")
    redis_file.write_text("redis://:s3cret@cache:6379/1\n")
    env = {"DATABASE_URL_FILE": str(db_file), "REDIS_URL_FILE": str(redis_file), "POSTGRES_HOST": "ignored"}
    assert DatabaseSettings.from_env(env).url == "postgresql+psycopg2://gw:s3cret@db:5432/gw"
    assert RedisSettings.from_env(env).url == "redis://:s3cret@cache:6379/1"


def test_each_service_has_its_own_broker_user():
    env = {"MQTT_API_USERNAME": "api", "MQTT_API_PASSWORD": "a-real-password-for-api", "MQTT_PREFIX": "gw"}
    s = MqttSettings.from_env("api", env)
    assert (s.username, s.password, s.prefix) == ("api", "a-real-password-for-api", "gw/")


def test_a_broker_user_without_password_is_refused():
    with pytest.raises(SettingsError, match="MQTT_PASSWORD"):
        MqttSettings.from_env("api", {"MQTT_API_USERNAME": "api"})


# .env.example leaves every optional setting empty (`LOG_LEVEL=`), and an env
# file sourced with `set -a` or read by compose exports them as empty strings.


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_variable_means_its_default(empty):
    env = dict.fromkeys(["MQTT_PORT", "MQTT_PREFIX", "MQTT_TLS", "LOG_LEVEL", "LOG_JSON", "POSTGRES_HOST"], empty)
    assert env_int("MQTT_PORT", 1883, env) == 1883
    assert env_str("MQTT_PREFIX", "smsgw/", env) == "smsgw/"
    assert env_bool("MQTT_TLS", False, env) is False
    assert env_float("MQTT_PORT", 1.5, env) == 1.5
    assert env_list("MQTT_PREFIX", "a,b", env) == ["a", "b"]
    assert env_log_level("LOG_LEVEL", "INFO", env) == "INFO"
    assert DatabaseSettings.from_env(env).url == "postgresql+psycopg2://smsgw@127.0.0.1:5432/smsgw"


def test_a_service_starts_from_an_env_file_of_empty_values():
    env = dict.fromkeys(
        [
            "LOG_LEVEL",
            "LOG_JSON",
            "MQTT_USERNAME",
            "MQTT_API_USERNAME",
            "REDIS_PASSWORD",
            "DATABASE_URL",
            "REDIS_URL",
            "MQTT_PREFIX",
            "MQTT_KEEPALIVE",
        ],
        "",
    )
    s = CommonSettings.from_env("api", env)
    assert (s.log_level, s.log_json) == ("INFO", True)
    assert (s.mqtt.username, s.mqtt.password, s.mqtt.prefix, s.mqtt.keepalive) == (None, None, "smsgw/", 30)
    assert s.redis.url == "redis://127.0.0.1:6379/0"


def test_an_empty_secret_is_missing_and_its_file_is_read_instead(tmp_path):
    path = tmp_path / "jwt"
    path.write_text("a-real-secret-from-a-file\n")
    assert env_secret("JWT_SECRET", {"JWT_SECRET": "", "JWT_SECRET_FILE": str(path)}) == "a-real-secret-from-a-file"
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        env_secret("JWT_SECRET", {"JWT_SECRET": " ", "JWT_SECRET_FILE": ""})


def test_an_unknown_log_level_is_named():
    with pytest.raises(SettingsError, match="LOG_LEVEL must be one of"):
        env_log_level("LOG_LEVEL", "INFO", {"LOG_LEVEL": "loud"})
    assert env_log_level("LOG_LEVEL", "INFO", {"LOG_LEVEL": " debug "}) == "DEBUG"


@pytest.mark.parametrize("level", ["", None, "  "])
def test_logging_set_up_with_an_empty_level_is_info(level):
    root = logging.getLogger()
    handlers, level_before = root.handlers[:], root.level
    try:
        jsonlog.setup("test", level, json_lines=True)
        assert root.level == logging.INFO
    finally:
        root.handlers[:] = handlers
        root.setLevel(level_before)


def test_a_ca_file_for_the_broker_turns_tls_on_and_must_exist(tmp_path):
    ca = tmp_path / "centre-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = MqttSettings.from_env("modem-worker", {"MQTT_CA_FILE": str(ca)})
    assert (settings.tls, settings.ca_file) == (True, str(ca))
    assert MqttSettings.from_env("modem-worker", {}).tls is False
    with pytest.raises(SettingsError, match="MQTT_CA_FILE: no such file"):
        MqttSettings.from_env("modem-worker", {"MQTT_CA_FILE": str(tmp_path / "missing.pem")})
