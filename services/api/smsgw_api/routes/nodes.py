"""Edge nodes: enrolment tokens, the credentials a node trades them for, and
revocation (docs/deployment.md, "Several sites"; the credentials:
domain/nodes.py).

    POST   /api/nodes             admin: a node and its one-time token (24 h)
    GET    /api/nodes             admin: every node, with its state and modems online
    POST   /api/nodes/<id>/token  admin: a new token (a replaced Pi); the old one stops working
    DELETE /api/nodes/<id>        admin: revoke: its database role is dropped and its sessions ended
    POST   /api/nodes/enrol       the token itself is the credential: the node's database login

A token works once. Enrolling again (with a new token) gives the node new
passwords; the old ones stop working at once. Broker users reach the broker
through NODES_BROKER_FILE (domain/nodes.py, write_broker_file), written in
the transaction that changes them.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, jsonify, request
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import ProgrammingError

from smsgw_api.core import ratelimit
from smsgw_api.core.errors import ApiError, Conflict, NotFound, Unauthorized
from smsgw_api.core.extensions import db, runtime
from smsgw_api.core.openapi import INT, NO_BODY, STR, TIME, array, nullable, obj, ok, register
from smsgw_api.core.ratelimit import Limit
from smsgw_api.core.security import current_principal, require_role
from smsgw_api.core.web import audit, body, client_ip, iso, settings
from smsgw_api.domain import nodes as creds
from smsgw_api.domain.requests import Enrol, NewNode
from smsgw_api.domain.webhooks import enqueue_modem_event, modem_status_payload
from smsgw_common.models import Modem, Node, utcnow
from smsgw_common.schemas import ModemState

log = logging.getLogger(__name__)
bp = Blueprint("nodes", __name__)

_LOGIN_SQL = text("SELECT smsgw_node_login(:id, :verifier)")
_DROP_SQL = text("SELECT smsgw_node_drop(:id)")


def _state(node: Node) -> str:
    if node.revoked_at is not None:
        return "revoked"
    if node.token_hash is not None and node.token_expires_at is not None and node.token_expires_at > utcnow():
        return "waiting"  # for its token to be used
    return "enrolled" if node.enrolled_at is not None else "expired"


def node_json(node: Node, online: int = 0) -> dict:
    return {
        "id": node.id,
        "name": node.name,
        "site": node.site,
        "modems": node.modems,
        "modem_ids": creds.modem_ids(node.name, node.modems),
        "online": online,
        "state": _state(node),
        "token_expires_at": iso(node.token_expires_at) if node.token_hash else None,
        "created_at": iso(node.created_at),
        "enrolled_at": iso(node.enrolled_at),
        "enrolled_from": node.enrolled_from,
        "revoked_at": iso(node.revoked_at),
    }


def _issue(node: Node) -> dict:
    token, digest = creds.new_token()
    node.token_hash, node.token_expires_at = digest, utcnow() + creds.TOKEN_TTL
    centre = request.host_url.rstrip("/")
    return {
        "token": token,
        "token_expires_at": iso(node.token_expires_at),
        # What the node's operator runs (docs/deployment.md); shown once, as the token.
        # CA: the centre's certificate (docs/deployment.md, "Enrolment"), which the node verifies it with.
        "join": f"make edge CENTRE={centre} TOKEN={token} CA=centre-cert.pem",
    }


def _get(node_id: int) -> Node:
    node = db.session.get(Node, node_id, with_for_update=True)
    if node is None:
        raise NotFound(f"no node with id {node_id}", code="node_not_found")
    return node


def _write_broker_users() -> None:
    """In the request's transaction, before its commit (domain/nodes.py)."""
    path = settings().nodes_broker_file
    if not path:
        log.warning("NODES_BROKER_FILE is not set: the broker does not learn edge nodes' users")
        return
    try:
        creds.write_broker_file(db.session.connection(), path)
    except OSError as exc:
        db.session.rollback()
        log.error("nodes: cannot write %s: %s", path, exc)
        raise ApiError(
            f"the broker's file of node users cannot be written ({exc.strerror}); nothing was changed",
            503,
            "broker_users_unavailable",
        ) from None


def _provisioning(exc: ProgrammingError) -> ApiError:
    log.error("node provisioning: %s", exc.orig)
    return ApiError(
        "node provisioning is not installed in the database: run db-setup (`docker compose up` runs it)",
        503,
        "provisioning_unavailable",
    )


@bp.get("/api/nodes")
@require_role("admin")
def list_nodes():
    rows = db.session.scalars(select(Node).order_by(Node.name)).all()
    ids = [m for n in rows for m in creds.modem_ids(n.name, n.modems)]
    online = dict(
        db.session.execute(
            select(Modem.node, func.count()).where(Modem.id.in_(ids), Modem.online).group_by(Modem.node)
        ).all()
    )
    return jsonify({"nodes": [node_json(n, online.get(n.name, 0)) for n in rows]})


@bp.post("/api/nodes")
@require_role("admin")
def create_node():
    data = body(NewNode)
    if db.session.scalar(select(Node.id).where(func.lower(Node.name) == data.name.lower())) is not None:
        raise Conflict(f"a node named {data.name} exists; issue it a new token instead", code="node_exists")
    node = Node(name=data.name, site=data.site, modems=data.modems, created_by=current_principal().user_id)
    db.session.add(node)
    issued = _issue(node)
    db.session.flush()
    audit("node_create", f"node {node.name} (site {node.site or 'none'}, {node.modems} modems) created")
    db.session.commit()
    return jsonify({"message": f"node {node.name} created", "node": node_json(node), **issued}), 201


@bp.post("/api/nodes/<int:node_id>/token")
@require_role("admin")
def reissue_token(node_id: int):
    node = _get(node_id)
    if node.revoked_at is not None:
        raise Conflict(f"node {node.name} is revoked; create a new node", code="node_revoked")
    issued = _issue(node)
    audit("node_token", f"new enrolment token for node {node.name}")
    db.session.commit()
    return jsonify({"message": f"new token for {node.name}", "node": node_json(node), **issued})


@bp.delete("/api/nodes/<int:node_id>")
@require_role("admin")
def revoke_node(node_id: int):
    node = _get(node_id)
    if node.revoked_at is None:
        if node.enrolled_at is not None:  # a node never enrolled has no role
            try:
                db.session.execute(_DROP_SQL, {"id": node.id})
            except ProgrammingError as exc:
                db.session.rollback()
                raise _provisioning(exc) from None
        node.revoked_at, node.token_hash, node.token_expires_at = utcnow(), None, None
        node.broker_hashes = None
        # Offline now, as the events consumer would record a last will: the
        # broker refuses a removed user's (its ACL block is gone), so no will
        # would ever come. The consumer also ignores their later "online"
        # states (pipeline/events.py), and the sweeper moves their queue.
        now, why = utcnow(), creds.revoked_error(node.name)
        statuses = {}
        for modem in db.session.scalars(select(Modem).where(Modem.id.in_(creds.modem_ids(node.name, node.modems)))):
            state = ModemState(
                modem_id=modem.id,
                online=False,
                ts=now,
                last_error=why,
                reason="revoked",
                node=node.name,
                site=node.site,
            )
            statuses[modem.id] = modem_status_payload(modem.id, state)
            if modem.online:
                enqueue_modem_event(db.session, modem.id, state, statuses[modem.id])
            modem.online, modem.last_error = False, why
        db.session.flush()
        _write_broker_users()
        audit("node_revoke", f"node {node.name} revoked: its database role and broker users gone, its sessions ended")
        db.session.commit()
        rt = runtime()
        for modem_id, data in statuses.items():
            rt.emit("modem_status", data)
            rt.keep_modem_status(modem_id, data)
    return jsonify({"message": f"node {node.name} revoked", "node": node_json(node)})


@bp.post("/api/nodes/enrol")
def enrol():
    """No session: the token is the credential. Failed attempts are limited
    per client address like logins (reserved before the token is looked up,
    given back when it works)."""
    s = settings()
    address = client_ip() or "unknown"
    limits = [Limit(ratelimit.ident("ip", address), s.login_max_attempts)]
    ratelimit.reserve("enrol", limits, s.login_window_seconds)
    data = body(Enrol)
    node = db.session.scalar(
        select(Node)
        .where(
            Node.token_hash == creds.token_hash(data.token), Node.revoked_at.is_(None), Node.token_expires_at > utcnow()
        )
        .with_for_update()
    )
    if node is None:
        audit("node_enrol", "enrolment with an unknown, used or expired token", status="failed")
        db.session.commit()
        raise Unauthorized("unknown, used or expired enrolment token; ask an admin for a new one", code="invalid_token")
    password = creds.new_password()
    try:
        role = db.session.execute(_LOGIN_SQL, {"id": node.id, "verifier": creds.scram_verifier(password)}).scalar_one()
    except ProgrammingError as exc:
        db.session.rollback()
        raise _provisioning(exc) from None
    broker = {modem_id: creds.new_password() for modem_id in creds.modem_ids(node.name, node.modems)}
    node.broker_hashes = {modem_id: creds.mosquitto_hash(pw) for modem_id, pw in broker.items()}
    node.token_hash, node.token_expires_at = None, None
    node.enrolled_at, node.enrolled_from = utcnow(), address[:64]
    db.session.flush()
    _write_broker_users()
    audit("node_enrol", f"node {node.name} enrolled from {address}")
    db.session.commit()
    ratelimit.release("enrol", limits)
    return jsonify(
        {
            "message": f"node {node.name} enrolled",
            "node": {"id": node.id, "name": node.name, "site": node.site},
            "modem_ids": creds.modem_ids(node.name, node.modems),
            "database": {"name": make_url(s.database_url).database, "user": role, "password": password},
            "broker": {"users": broker, "keepalive": creds.keepalive_for(s.node_unreachable_seconds)},
        }
    )


_NODE = {
    "id": INT,
    "name": STR,
    "site": nullable(STR),
    "modems": INT,
    "modem_ids": array(STR),
    "online": INT,
    "state": STR,
    "token_expires_at": TIME,
    "created_at": TIME,
    "enrolled_at": TIME,
    "enrolled_from": nullable(STR),
    "revoked_at": TIME,
}
_ISSUED = {"token": STR, "token_expires_at": TIME, "join": STR}


def init_app(app: Flask) -> None:
    if "nodes" in app.blueprints:
        return
    app.register_blueprint(bp)
    tags = ["nodes"]
    register(
        "/api/nodes",
        "GET",
        {"summary": "Edge nodes (admin)", "tags": tags, "responses": {"200": ok({"nodes": array(obj(_NODE))})}},
    )
    register(
        "/api/nodes",
        "POST",
        {
            "summary": "Create an edge node and its one-time enrolment token (admin)",
            "tags": tags,
            "responses": {"201": ok({"message": STR, "node": obj(_NODE), **_ISSUED}, "Created")},
        },
        body=NewNode,
    )
    register(
        "/api/nodes/<int:node_id>/token",
        "POST",
        {
            "summary": "A new enrolment token for a node (admin)",
            "tags": tags,
            "responses": {"200": ok({"message": STR, "node": obj(_NODE), **_ISSUED})},
        },
        body=NO_BODY,
    )
    register(
        "/api/nodes/<int:node_id>",
        "DELETE",
        {
            "summary": "Revoke a node: its credentials stop working (admin)",
            "tags": tags,
            "responses": {"200": ok({"message": STR, "node": obj(_NODE)})},
        },
    )
    register(
        "/api/nodes/enrol",
        "POST",
        {
            "summary": "Trade an enrolment token for the node's credentials (no session: the token)",
            "tags": tags,
            "security": [],
            "responses": {
                "200": ok(
                    {
                        "message": STR,
                        "node": obj({"id": INT, "name": STR, "site": nullable(STR)}),
                        "modem_ids": array(STR),
                        "database": obj({"name": STR, "user": STR, "password": STR}),
                        "broker": obj({"users": {"type": "object", "additionalProperties": STR}, "keepalive": INT}),
                    }
                ),
                "401": {"description": "unknown, used or expired token"},
            },
        },
        body=Enrol,
    )
