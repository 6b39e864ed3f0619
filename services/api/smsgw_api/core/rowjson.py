"""Turning stored rows into JSON without trusting them.

The API writes only values it validated, but rows also come from older
versions, hand edits and restores. A date Python cannot hold reads as a
clamped sentinel (smsgw_common.rowsafety); here it becomes `null`, and the
row says which of its fields could not be read in `unreadable_fields`
(present only on such rows). A row that fails to serialise for any other
reason is shown by its id with `unreadable_fields: ["*"]` and logged, so
one bad row never turns a whole listing into a 500 (docs/api-contract.md,
"Rows the gateway cannot read").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from smsgw_common.rowsafety import out_of_range

log = logging.getLogger(__name__)

UNREADABLE = "unreadable_fields"


def safe_iso(value: datetime | None) -> str | None:
    if value is None or out_of_range(value):
        return None
    return value.isoformat()


def safe_seed_time(value: datetime | None) -> dict:
    """The seed's `timestamp` (Unix seconds) and `created_at`, null when unreadable."""
    if value is None or out_of_range(value):
        return {"timestamp": None, "created_at": None}
    return {"timestamp": int(value.timestamp()), "created_at": value.isoformat()}


def flag_unreadable(out: dict, source: Any, fields: Iterable[str]) -> dict:
    """Add `unreadable_fields` to `out` for the fields of `source` that read out of range."""
    get = source.get if isinstance(source, dict) else lambda name: getattr(source, name, None)
    bad = [name for name in fields if out_of_range(get(name))]
    if bad:
        seen = out.get(UNREADABLE, [])
        out[UNREADABLE] = seen + [name for name in bad if name not in seen]
    return out


def serialise_rows(rows: Iterable[Any], to_json: Callable[[Any], dict], id_of: Callable[[Any], Any]) -> list[dict]:
    """`to_json` of each row; a row it cannot turn into JSON is shown by its id alone."""
    out = []
    for row in rows:
        try:
            out.append(to_json(row))
        except Exception:
            row_id = id_of(row)
            log.warning("row %s could not be serialised; shown by its id only", row_id, exc_info=True)
            out.append({"id": row_id, UNREADABLE: ["*"]})
    return out
