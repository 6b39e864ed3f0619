"""Engine and session factory; every service connects the same way."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .rowsafety import install_safe_timestamps

# A link that black-holes (a site's uplink, a NAT that forgot the flow) must
# fail a connection within seconds, not after the kernel's defaults (two
# hours of keepalive silence, about 15 minutes of retransmissions): until it
# fails, the caller is stuck, and after the link returns a retransmission
# backed off for a minute is what wakes it. Failed, it retries on a fresh
# connection (docs/deployment.md, "Several sites").
DEAD_LINK_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms that sent data may stay unacknowledged
}


def make_engine(url: str, pool_size: int = 5, max_overflow: int = 10, pre_ping: bool = True, **kw: Any) -> Engine:
    """pre_ping survives a Postgres restart without a failed request, at one
    round trip per checkout; a caller that retries on its own may turn it off.
    A date Python cannot hold reads as a clamped sentinel (rowsafety.py), so
    one hand-written row cannot make every query that touches it raise."""
    kw["connect_args"] = {**DEAD_LINK_ARGS, **kw.get("connect_args", {})}
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        future=True,
        **kw,
    )
    install_safe_timestamps(engine)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit on success, roll back on any error: nothing half-written."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
