"""Shared listing machinery: filters, newest-first order, pagination.

Keyset (`before_id`) pages cost the same at any depth; `page` is kept for
the seed-style dashboard. Exact totals over a million rows would cost more
than the page itself, so `total` counts at most TOTAL_CAP rows and says so
with `total_capped`.
"""
from __future__ import annotations

from flask import request
from sqlalchemy import func, select

from .web import Page, parse_int, parse_time

TOTAL_CAP = 1000


def time_filters(stmt, column):
    args = request.args
    if args.get("since"):
        stmt = stmt.where(column >= parse_time(args["since"], "since"))
    if args.get("until"):
        stmt = stmt.where(column < parse_time(args["until"], "until"))
    return stmt


def int_arg(name: str):
    value = request.args.get(name)
    return None if value in (None, "") else parse_int(value, name, 1)


def paginate(stmt, id_column, page: Page, count: bool = True):
    """Run `stmt` (a select of mappings-able columns) one page at a time."""
    from .extensions import db

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
