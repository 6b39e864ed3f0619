"""Shared listing machinery: filters, newest-first order, pagination.

Keyset (`before_id`) pages cost the same at any depth; `page` is kept for
the seed-style dashboard. Exact totals over a million rows would cost more
than the page itself, so `total` counts at most TOTAL_CAP rows and says so
with `total_capped`.
"""

from __future__ import annotations

from sqlalchemy import func, select

from smsgw_api.core.contract import TimeWindow
from smsgw_api.core.extensions import db
from smsgw_api.core.web import Page

TOTAL_CAP = 1000


def time_filters(stmt, column, window: TimeWindow):
    if window.since is not None:
        stmt = stmt.where(column >= window.since)
    if window.until is not None:
        stmt = stmt.where(column < window.until)
    return stmt


def paginate(stmt, id_column, page: Page, count: bool = True):
    """Run `stmt` (a select of mappings-able columns) one page at a time."""
    filtered = stmt
    if page.before_id is not None:
        stmt = stmt.where(id_column < page.before_id)
    stmt = stmt.order_by(id_column.desc()).limit(page.per_page + 1).offset(page.offset)
    result = db.session.execute(stmt)
    keys = list(result.keys())
    rows = [dict(zip(keys, r)) for r in result]
    total = None
    capped = False
    if count and page.page is not None:
        sub = filtered.with_only_columns(id_column).limit(TOTAL_CAP + 1).subquery()
        total = db.session.scalar(select(func.count()).select_from(sub))
        if total > TOTAL_CAP:
            total, capped = TOTAL_CAP, True
    meta = page.meta(rows, total)
    meta["total_capped"] = capped
    meta["has_more"] = len(rows) > page.per_page
    return rows[: page.per_page], meta
