"""Helpers for the API tests (personas, SIMs, row counts)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from smsgw_common.models import ApiKey, Modem, SimCard, User

PASSWORD = "correct horse battery staple"


def api_env(database_url, redis_url, mqtt_prefix, **extra) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": "1883",
        "MQTT_PREFIX": mqtt_prefix,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "ROUTING_CACHE_SECONDS": "0",
        "API_DB_POOL_SIZE": "5",
        "LOGIN_MAX_ATTEMPTS": "5",
        "USSD_TIMEOUT_SECONDS": "3",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Persona:
    id: int
    username: str
    role: str
    api_key: str
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


def make_persona(engine, username: str, role: str) -> Persona:
    from smsgw_api.security import new_api_key
    from werkzeug.security import generate_password_hash

    key, prefix, digest = new_api_key()
    with Session(engine) as s:
        user = User(username=username, password_hash=generate_password_hash(PASSWORD), role=role)
        s.add(user)
        s.flush()
        s.add(ApiKey(user_id=user.id, name="test", prefix=prefix, key_hash=digest))
        s.commit()
        return Persona(user.id, username, role, key)


def unique_number() -> str:
    return "+49151" + str(secrets.randbelow(10**7)).zfill(7)


def make_sim(engine, *, online: bool = True, modem_id: str | None = None, status: str = "active", **limits) -> SimCard:
    """An active SIM in a modem that a worker reported (online or not)."""
    modem_id = modem_id or f"m{secrets.token_hex(4)}"
    with Session(engine, expire_on_commit=False) as s:
        if s.get(Modem, modem_id) is None:
            s.add(Modem(id=modem_id, online=online, signal_quality=20, registration="home", operator="TestNet"))
            s.flush()
        sim = SimCard(number=unique_number(), status=status, modem_id=modem_id,
                      iccid="8949" + secrets.token_hex(7), **limits)
        s.add(sim)
        s.commit()
        return sim


def count_rows(engine, table: str, where: str = "true", **params) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar()
