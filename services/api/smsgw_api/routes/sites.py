"""Sites: where SIMs are, and which recipients prefer which site
(docs/deployment.md, "Several sites").

A SIM is at its modem's site, which the modem's worker reports (`SITE`).
`GET /api/sites` lists the sites with their modems and SIMs, and the prefix
list; admins replace the prefix list with `PUT /api/sites/prefixes`. Routing
(domain/routing.py) reads the list with its snapshot, so another API process
follows within ROUTING_CACHE_SECONDS; this one at once.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from sqlalchemy import delete, select, text

from smsgw_api.core.errors import ValidationError
from smsgw_api.core.extensions import db
from smsgw_api.core.openapi import INT, STR, array, obj, ok, register
from smsgw_api.core.security import require_role
from smsgw_api.core.web import audit, body
from smsgw_api.domain.requests import SitePrefixes
from smsgw_api.routes.deps import router
from smsgw_common.models import SitePrefix

bp = Blueprint("sites", __name__)

_SITES_SQL = text(
    "SELECT m.site, count(DISTINCT m.id) AS modems, count(DISTINCT m.id) FILTER (WHERE m.online) AS online, "
    "count(s.id) FILTER (WHERE s.status = 'active') AS active_sims "
    "FROM modems m LEFT JOIN sim_cards s ON s.modem_id = m.id WHERE m.site IS NOT NULL "
    "GROUP BY m.site ORDER BY m.site"
)


def _prefixes() -> list[dict]:
    rows = db.session.scalars(select(SitePrefix).order_by(SitePrefix.prefix)).all()
    return [{"prefix": r.prefix, "site": r.site} for r in rows]


def _listing() -> dict:
    prefixes = _prefixes()
    sites = [
        {
            "site": r.site,
            "modems": r.modems,
            "online": r.online,
            "active_sims": r.active_sims,
            "prefixes": [p["prefix"] for p in prefixes if p["site"] == r.site],
        }
        for r in db.session.execute(_SITES_SQL)
    ]
    return {"sites": sites, "prefixes": prefixes}


@bp.get("/api/sites")
@require_role("viewer")
def list_sites():
    return jsonify(_listing())


@bp.put("/api/sites/prefixes")
@require_role("admin")
def set_prefixes():
    data = body(SitePrefixes)
    seen: dict[str, int] = {}
    fields = {}
    for i, p in enumerate(data.prefixes):
        if p.prefix in seen:
            fields[f"prefixes[{i}].prefix"] = f"{p.prefix} is already prefixes[{seen[p.prefix]}]"
        seen.setdefault(p.prefix, i)
    if fields:
        raise ValidationError(fields)
    # One transaction: a routing snapshot sees the old list or the new one.
    db.session.execute(delete(SitePrefix))
    db.session.add_all(SitePrefix(prefix=p.prefix, site=p.site) for p in data.prefixes)
    listed = ", ".join(f"{p.prefix}={p.site}" for p in data.prefixes) or "none"
    audit("site_prefixes_set", f"recipient prefixes per site: {listed}"[:2000])
    db.session.commit()
    router().invalidate()
    return jsonify({"message": f"{len(data.prefixes)} prefixes set", **_listing()})


_PREFIX = {"prefix": STR, "site": STR}
_SITE = {"site": STR, "modems": INT, "online": INT, "active_sims": INT, "prefixes": array(STR)}


def init_app(app: Flask) -> None:
    if "sites" in app.blueprints:
        return
    app.register_blueprint(bp)
    tags = ["sites"]
    listing = {"sites": array(obj(_SITE)), "prefixes": array(obj(_PREFIX))}
    register(
        "/api/sites",
        "GET",
        {
            "summary": "Sites with their modems and SIMs, and the recipient prefixes",
            "tags": tags,
            "responses": {"200": ok(listing)},
        },
    )
    register(
        "/api/sites/prefixes",
        "PUT",
        {
            "summary": "Replace the recipient prefixes that prefer a site (admin)",
            "tags": tags,
            "responses": {"200": ok({"message": STR, **listing})},
        },
        body=SitePrefixes,
    )
