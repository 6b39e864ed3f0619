"""`python -m smsgw_api.migrate`: wait for Postgres, then `alembic upgrade head`."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from smsgw_common.settings import DatabaseSettings

log = logging.getLogger("smsgw_api.migrate")
INI = Path(__file__).with_name("alembic.ini")


def alembic_config(url: str) -> Config:
    cfg = Config(str(INI))
    cfg.attributes["url"] = url
    return cfg


def wait_for_database(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    engine = create_engine(url, pool_pre_ping=True)
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    raise SystemExit(f"database not reachable after {timeout:.0f}s: {exc.orig}") from None
                log.info("waiting for the database ...")
                time.sleep(1)
    finally:
        engine.dispose()


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url = DatabaseSettings.from_env().url
    wait_for_database(url)
    upgrade(url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
