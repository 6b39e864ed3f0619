"""Rows Python cannot read back, and how every reader survives them.

Postgres stores timestamps from 4713 BC to 294276 AD (and ±infinity);
Python's datetime stops at years 1 and 9999. A value outside that range,
already in the database (written by hand, by an older version, by a
restore), made psycopg2 raise `ValueError: year 10000 is out of range` on
every query that touched the row: a worker's claim, a listing, a cancel.

Two defences, because one bad row must never stop a loop or a listing:

- `install_safe_timestamps(engine)`: such a value reads as `OUT_OF_RANGE_HIGH`
  or `OUT_OF_RANGE_LOW` (datetime.max / datetime.min, which psycopg2
  already uses for ±infinity), so ordering stays right (a send_at in year
  10000 is never due) and nothing raises. `out_of_range(value)` tells a
  serialiser to show such a field as null and flag it.
- `readable(column)` / `unreadable(column)`: SQL that keeps such rows
  out of the work queue and finds them, so `queue.quarantine_unreadable`
  can fail them with `unreadable row: <field> out of range`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import psycopg2.extensions as pgext
from sqlalchemy import event, literal_column, or_
from sqlalchemy.engine import Engine
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

Column = ColumnElement[Any] | QueryableAttribute[Any]

OUT_OF_RANGE_HIGH = datetime.max.replace(tzinfo=UTC)
OUT_OF_RANGE_LOW = datetime.min.replace(tzinfo=UTC)

# Bounds as SQL literals: psycopg2 could not even send year 10000 as a parameter.
_LOWEST: ColumnClause[Any] = literal_column("'0001-01-01 00:00:00+00'::timestamptz")
_BEYOND: ColumnClause[Any] = literal_column("'9999-12-31 00:00:00+00'::timestamptz")

# Postgres type OIDs: timestamp, timestamptz, date.
_TIMESTAMP, _TIMESTAMPTZ, _DATE = 1114, 1184, 1082


def _is_low(value: str) -> bool:
    return value.endswith(" BC") or value.startswith("-")


def _guarded(name: str, oid: int, base: Any, high: Any, low: Any) -> Any:
    def cast(value: str | None, cursor: Any) -> Any:
        try:
            return base(value, cursor)
        except ValueError:
            if value is None:
                raise
            return low if _is_low(value) else high

    return pgext.new_type((oid,), name, cast)


_TYPES = (
    _guarded("SAFE_TIMESTAMP", _TIMESTAMP, pgext.PYDATETIME, datetime.max, datetime.min),
    _guarded("SAFE_TIMESTAMPTZ", _TIMESTAMPTZ, pgext.PYDATETIMETZ, OUT_OF_RANGE_HIGH, OUT_OF_RANGE_LOW),
    _guarded("SAFE_DATE", _DATE, pgext.PYDATE, date.max, date.min),
)


def install_safe_timestamps(engine: Engine) -> None:
    """Read out-of-range dates as the clamped sentinels on every connection of `engine`."""

    @event.listens_for(engine, "connect")
    def _register(dbapi_connection: Any, _record: Any) -> None:
        for type_ in _TYPES:
            pgext.register_type(type_, dbapi_connection)


def out_of_range(value: object) -> bool:
    """True for a value the database held but Python cannot represent (or ±infinity)."""
    if isinstance(value, datetime):
        naive = value.replace(tzinfo=None)
        return naive in (datetime.max, datetime.min)
    if isinstance(value, date):
        return value in (date.max, date.min)
    return False


def readable(column: Column) -> ColumnElement[bool]:
    """NULL or a timestamp Python can represent, with a day's margin for time zones."""
    return or_(column.is_(None), column.between(_LOWEST, _BEYOND))


def unreadable(column: Column) -> ColumnElement[bool]:
    return column.is_not(None) & ~column.between(_LOWEST, _BEYOND)
