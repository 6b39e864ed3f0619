import pytest

from smsgw_common.settings import (
    DatabaseSettings, MqttSettings, RedisSettings, SettingsError, env_bool, env_int, env_secret,
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
