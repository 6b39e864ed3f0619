"""Scratch databases for the benchmarks: each run creates one of its own and
drops it after. BENCH_PG_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/test)
is a superuser connection to any database of the server."""
from __future__ import annotations

import os

import psycopg2
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(name: str) -> str:
    """Create an empty database; returns its SQLAlchemy URL (psycopg2 driver)."""
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg2", database=name)
    return url.render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
