"""Typed settings from the environment, shared by every service.

Every secret can also be given as NAME_FILE (Docker secrets). A service
refuses to start when a secret it needs is missing or still a placeholder,
so a forgotten `.env` can never run with a guessable key.

A variable set to nothing (`LOG_LEVEL=` in an env file, which .env.example
is full of) means "use the default", exactly as if it were not set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, overload
from urllib.parse import quote

Environ = Mapping[str, str]

PLACEHOLDERS = {
    "",
    "changeme",
    "change-me",
    "change_me",
    "changeit",
    "secret",
    "password",
    "admin",
    "xxx",
    "todo",
    "placeholder",
    "example",
    "default",
    "none",
    "null",
}


class SettingsError(RuntimeError):
    """A required setting is missing or invalid; the message names it."""


def env_value(name: str, environ: Environ | None = None) -> str | None:
    """NAME's value, or None when it is unset, empty or only blanks."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value is None or not value.strip():
        return None
    return value


def env_str(name: str, default: str | None = None, environ: Environ | None = None) -> str:
    value = env_value(name, environ)
    if value is None:
        if default is None:
            raise SettingsError(f"{name} is not set")
        return default
    return value


def env_int(name: str, default: int, environ: Environ | None = None) -> int:
    raw = env_str(name, str(default), environ)
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float, environ: Environ | None = None) -> float:
    raw = env_str(name, str(default), environ)
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def env_bool(name: str, default: bool, environ: Environ | None = None) -> bool:
    raw = env_str(name, "1" if default else "0", environ).strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean (true/false), got {raw!r}")


def env_list(name: str, default: str = "", environ: Environ | None = None) -> list[str]:
    return [p.strip() for p in env_str(name, default, environ).split(",") if p.strip()]


def env_log_level(name: str = "LOG_LEVEL", default: str = "INFO", environ: Environ | None = None) -> str:
    """A level name logging knows (DEBUG, INFO, WARNING, ERROR, CRITICAL), upper case."""
    level = env_str(name, default, environ).strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise SettingsError(f"{name} must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {level!r}")
    return level


def is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    return v in PLACEHOLDERS or v.startswith(("change", "<"))


@overload
def env_secret(
    name: str, environ: Environ | None = None, required: Literal[True] = True, min_length: int = 1
) -> str: ...
@overload
def env_secret(name: str, environ: Environ | None = None, required: bool = True, min_length: int = 1) -> str | None: ...
def env_secret(name: str, environ: Environ | None = None, required: bool = True, min_length: int = 1) -> str | None:
    """Read NAME or the file named by NAME_FILE; refuse placeholders."""
    value = env_value(name, environ)
    path = env_value(f"{name}_FILE", environ)
    if value is None and path:
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE={path} cannot be read: {exc.strerror}") from None
    if value is None or value == "":
        if not required:
            return None
        raise SettingsError(f"{name} (or {name}_FILE) is not set; generate one with `make secrets`")
    if is_placeholder(value):
        raise SettingsError(f"{name} is still a placeholder ({value!r}); set a real secret")
    if len(value) < min_length:
        raise SettingsError(f"{name} must be at least {min_length} characters long")
    return value


@dataclass(frozen=True)
class DatabaseSettings:
    url: str

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> DatabaseSettings:
        environ = os.environ if environ is None else environ
        # A URL with the password in it is a secret too (DATABASE_URL_FILE).
        url = env_secret("DATABASE_URL", environ, required=False)
        if not url:
            password = env_secret("POSTGRES_PASSWORD", environ, required=False) or ""
            user = env_str("POSTGRES_USER", "smsgw", environ)
            host = env_str("POSTGRES_HOST", "127.0.0.1", environ)
            port = env_int("POSTGRES_PORT", 5432, environ)
            db = env_str("POSTGRES_DB", "smsgw", environ)
            auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
            url = f"postgresql+psycopg2://{auth}@{host}:{port}/{db}"
        return cls(url=url)


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    prefix: str
    tls: bool = False
    keepalive: int = 30
    # The CA that signed the broker's certificate (a centre's own CA); None:
    # the system's CAs. Setting it turns TLS on.
    ca_file: str | None = None

    @classmethod
    def from_env(cls, service: str, environ: Environ | None = None) -> MqttSettings:
        """Each service has its own broker user: MQTT_<SERVICE>_USERNAME/PASSWORD.

        The generic MQTT_USERNAME/MQTT_PASSWORD are the fallback, which keeps a
        native single-user setup simple; a broker without auth needs neither.
        """
        environ = os.environ if environ is None else environ
        key = service.upper().replace("-", "_")
        username = env_value(f"MQTT_{key}_USERNAME", environ) or env_value("MQTT_USERNAME", environ)
        password = None
        if username:
            password = env_secret(f"MQTT_{key}_PASSWORD", environ, required=False) or env_secret(
                "MQTT_PASSWORD", environ, required=True
            )
        prefix = env_str("MQTT_PREFIX", "smsgw/", environ)
        if not prefix.endswith("/"):
            prefix += "/"
        ca_file = env_value("MQTT_CA_FILE", environ)
        if ca_file is not None and not os.path.isfile(ca_file):
            raise SettingsError(f"MQTT_CA_FILE: no such file: {ca_file}")
        return cls(
            host=env_str("MQTT_HOST", "127.0.0.1", environ),
            port=env_int("MQTT_PORT", 1883, environ),
            username=username,
            password=password,
            prefix=prefix,
            tls=env_bool("MQTT_TLS", False, environ) or ca_file is not None,
            keepalive=env_int("MQTT_KEEPALIVE", 30, environ),
            ca_file=ca_file,
        )


@dataclass(frozen=True)
class RedisSettings:
    url: str

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> RedisSettings:
        environ = os.environ if environ is None else environ
        url = env_secret("REDIS_URL", environ, required=False)
        if not url:
            password = env_secret("REDIS_PASSWORD", environ, required=False)
            host = env_str("REDIS_HOST", "127.0.0.1", environ)
            port = env_int("REDIS_PORT", 6379, environ)
            db = env_int("REDIS_DB", 0, environ)
            auth = f":{quote(password, safe='')}@" if password else ""
            url = f"redis://{auth}{host}:{port}/{db}"
        return cls(url=url)


@dataclass(frozen=True)
class CommonSettings:
    database: DatabaseSettings
    mqtt: MqttSettings
    redis: RedisSettings
    log_level: str = "INFO"
    log_json: bool = True

    @classmethod
    def from_env(cls, service: str, environ: Environ | None = None) -> CommonSettings:
        environ = os.environ if environ is None else environ
        return cls(
            database=DatabaseSettings.from_env(environ),
            mqtt=MqttSettings.from_env(service, environ),
            redis=RedisSettings.from_env(environ),
            log_level=env_log_level("LOG_LEVEL", "INFO", environ),
            log_json=env_bool("LOG_JSON", True, environ),
        )
