"""Edge nodes' enrolment (routes/nodes.py, postgres/roles.sql): a one-time
token traded for a database role of the node's own, with a worker's rights
and nothing more; a new token re-keys it; revoking ends its sessions and its
login. Run against a Postgres of the test's own, set up by the stack's own
db-setup (postgres/setup.py), with the API connected as its least-privileged
role and every role logging in with its password, as in the stack."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta

import psycopg2
import pytest
from sqlalchemy import create_engine, make_url, text
from support.api import api_env, make_persona
from support.private_postgres import PrivatePostgres

from smsgw_common.models import Node, utcnow

INSUFFICIENT_PRIVILEGE = "42501"


@pytest.fixture(scope="module")
def centre(redis_url, mqtt_prefix, tmp_path_factory):
    broker_file = tmp_path_factory.mktemp("broker") / "passwd"
    pg = PrivatePostgres(passwords=True)
    try:
        passwords = pg.db_setup("smsgw")
        from smsgw_api import create_app
        from smsgw_api.core.extensions import bus, db

        api_url = f"postgresql+psycopg2://smsgw_api:{passwords['POSTGRES_API_PASSWORD']}@127.0.0.1:{pg.port}/smsgw"
        app = create_app(
            {"ENV": api_env(api_url, redis_url, mqtt_prefix, NODES_BROKER_FILE=broker_file), "TESTING": True}
        )
        superuser = create_engine(pg.url("smsgw"))
        admin = make_persona(superuser, "node-admin", "admin")
        user = make_persona(superuser, "node-user", "user")
        yield {
            "pg": pg,
            "app": app,
            "client": app.test_client(),
            "admin": admin,
            "user": user,
            "db": superuser,
            "broker_file": broker_file,
        }
        bus.stop(app)
        db.dispose(app)
        superuser.dispose()
    finally:
        pg.close()


def node_connect(pg, user: str, password: str):
    return psycopg2.connect(
        host="127.0.0.1", port=pg.port, dbname="smsgw", user=user, password=password, connect_timeout=5
    )


def outcome(conn, statement: str):
    """ "ok" or the SQLSTATE; rolled back either way."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
        return "ok"
    except psycopg2.Error as exc:
        return exc.pgcode
    finally:
        conn.rollback()


def broker_users(c) -> dict[str, str]:
    """The broker's file as the API wrote it: modem id -> hash."""
    lines = c["broker_file"].read_text().splitlines() if c["broker_file"].exists() else []
    return dict(line.split(":", 1) for line in lines)


def opens(hashed: str, password: str) -> bool:
    """Whether a $7$ entry is this password's (what mosquitto checks)."""
    from smsgw_api.domain.nodes import mosquitto_hash

    _, _, _, salt, _ = hashed.split("$")
    return mosquitto_hash(password, base64.b64decode(salt)) == hashed


def create(c, who, **body):
    return c["client"].post("/api/nodes", json={"name": f"n{secrets.token_hex(3)}", **body}, headers=who.headers)


def an_address() -> str:
    """A client address of its own: failed enrolments are counted per address."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def enrol(c, token: str, address: str | None = None):
    return c["client"].post(
        "/api/nodes/enrol", json={"token": token}, environ_base={"REMOTE_ADDR": address or an_address()}
    )


def test_a_token_buys_once_a_database_login_with_a_workers_rights_and_no_more(centre):
    made = create(centre, centre["admin"], site="de", modems=2)
    assert made.status_code == 201, made.get_json()
    answer = made.get_json()
    node, token = answer["node"], answer["token"]
    assert node["state"] == "waiting" and node["modem_ids"] == [f"{node['name']}-1", f"{node['name']}-2"]
    assert f"TOKEN={token}" in answer["join"]
    with centre["db"].connect() as conn:  # only its digest is kept
        stored = conn.execute(text("SELECT token_hash FROM nodes WHERE id = :id"), {"id": node["id"]}).scalar()
    assert stored and token not in stored

    got = enrol(centre, token)
    assert got.status_code == 200, got.get_json()
    login = got.get_json()
    assert login["database"]["user"] == f"smsgw_node_{node['id']}" and login["modem_ids"] == node["modem_ids"]
    conn = node_connect(centre["pg"], login["database"]["user"], login["database"]["password"])
    try:
        assert outcome(conn, "SELECT id, status FROM messages LIMIT 1") == "ok"
        assert outcome(conn, "UPDATE modems SET online = false WHERE id = 'none'") == "ok"
        for forbidden in (
            "SELECT * FROM users",
            "SELECT * FROM api_keys",
            "SELECT * FROM nodes",
            "DELETE FROM messages",
            "CREATE ROLE intruder",
            "CREATE TABLE intruder (id int)",
            f"SELECT smsgw_node_drop({node['id']})",
        ):
            assert outcome(conn, forbidden) == INSUFFICIENT_PRIVILEGE, forbidden
    finally:
        conn.close()

    # One broker user per modem, known to the broker by its hash only.
    users = broker_users(centre)
    assert set(login["broker"]["users"]) == set(node["modem_ids"]) <= set(users)
    assert login["broker"]["keepalive"] == 30  # its last will 45 s after its last word (NODE_UNREACHABLE_SECONDS)
    for modem_id, password in login["broker"]["users"].items():
        assert users[modem_id].startswith("$7$") and password not in users[modem_id]
        assert opens(users[modem_id], password)

    again = enrol(centre, token)
    assert again.status_code == 401 and again.get_json()["code"] == "invalid_token"
    listed = centre["client"].get("/api/nodes", headers=centre["admin"].headers).get_json()["nodes"]
    mine = next(n for n in listed if n["id"] == node["id"])
    assert mine["state"] == "enrolled" and mine["enrolled_at"] and mine["token_expires_at"] is None


def test_revoking_a_node_ends_its_open_sessions_and_its_login(centre):
    node = create(centre, centre["admin"]).get_json()
    login = enrol(centre, node["token"]).get_json()["database"]
    assert set(node["node"]["modem_ids"]) <= set(broker_users(centre))
    conn = node_connect(centre["pg"], login["user"], login["password"])
    assert outcome(conn, "SELECT 1") == "ok"

    r = centre["client"].delete(f"/api/nodes/{node['node']['id']}", headers=centre["admin"].headers)
    assert r.status_code == 200 and r.get_json()["node"]["state"] == "revoked"
    with pytest.raises(psycopg2.OperationalError):
        with conn.cursor() as cur:  # its session was ended
            cur.execute("SELECT 1")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        node_connect(centre["pg"], login["user"], login["password"])
    assert not set(node["node"]["modem_ids"]) & set(broker_users(centre))
    # Revoked stays revoked: no new token, and a second revoke changes nothing.
    assert (
        centre["client"].post(f"/api/nodes/{node['node']['id']}/token", headers=centre["admin"].headers).status_code
        == 409
    )
    assert (
        centre["client"].delete(f"/api/nodes/{node['node']['id']}", headers=centre["admin"].headers).status_code == 200
    )


def test_a_new_token_rekeys_the_node_and_the_old_password_stops_working(centre):
    node = create(centre, centre["admin"]).get_json()
    got = enrol(centre, node["token"]).get_json()
    first, first_broker = got["database"], got["broker"]["users"]
    reissued = centre["client"].post(f"/api/nodes/{node['node']['id']}/token", headers=centre["admin"].headers)
    assert reissued.status_code == 200
    got = enrol(centre, reissued.get_json()["token"]).get_json()
    second, second_broker = got["database"], got["broker"]["users"]
    assert second["user"] == first["user"] and second["password"] != first["password"]
    users = broker_users(centre)
    for modem_id in first_broker:
        assert opens(users[modem_id], second_broker[modem_id]) and not opens(users[modem_id], first_broker[modem_id])
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        node_connect(centre["pg"], first["user"], first["password"])
    node_connect(centre["pg"], second["user"], second["password"]).close()


def test_an_expired_token_or_a_replaced_one_is_refused(centre):
    node = create(centre, centre["admin"]).get_json()
    with centre["db"].begin() as conn:
        conn.execute(
            text("UPDATE nodes SET token_expires_at = :t WHERE id = :id"),
            {"t": utcnow() - timedelta(seconds=1), "id": node["node"]["id"]},
        )
    assert enrol(centre, node["token"]).status_code == 401
    reissued = centre["client"].post(f"/api/nodes/{node['node']['id']}/token", headers=centre["admin"].headers)
    old = reissued.get_json()["token"]
    centre["client"].post(f"/api/nodes/{node['node']['id']}/token", headers=centre["admin"].headers)
    assert enrol(centre, old).status_code == 401
    listed = centre["client"].get("/api/nodes", headers=centre["admin"].headers).get_json()["nodes"]
    assert next(n for n in listed if n["id"] == node["node"]["id"])["enrolled_at"] is None


def test_when_the_brokers_file_cannot_be_written_nothing_changes_and_the_token_still_works(centre):
    app = centre["app"]
    node = create(centre, centre["admin"]).get_json()
    kept = app.config["SMSGW_SETTINGS"]
    app.config["SMSGW_SETTINGS"] = kept.with_overrides(nodes_broker_file="/nonexistent/smsgw-nodes/passwd")
    try:
        r = enrol(centre, node["token"])
        assert r.status_code == 503 and r.get_json()["code"] == "broker_users_unavailable"
    finally:
        app.config["SMSGW_SETTINGS"] = kept
    with centre["db"].connect() as conn:
        role = f"smsgw_node_{node['node']['id']}"
        assert conn.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar() == 0
    assert enrol(centre, node["token"]).status_code == 200


def test_the_apis_role_creates_no_role_itself_and_the_functions_touch_no_other_role(centre):
    from smsgw_api.domain.nodes import scram_verifier

    api_password = make_url(centre["app"].config["SMSGW_SETTINGS"].database_url).password
    conn = node_connect(centre["pg"], "smsgw_api", api_password)
    with centre["db"].begin() as su:  # a role of the same shape that is no node's
        su.execute(text("DROP ROLE IF EXISTS smsgw_node_999999"))
        su.execute(text("CREATE ROLE smsgw_node_999999 LOGIN"))
    try:
        assert outcome(conn, "CREATE ROLE intruder LOGIN") == INSUFFICIENT_PRIVILEGE
        assert outcome(conn, "ALTER ROLE smsgw_worker PASSWORD 'x'") == INSUFFICIENT_PRIVILEGE
        # A password instead of a verifier, another role, a bad id: refused (P0001: raised by the function).
        assert outcome(conn, "SELECT smsgw_node_login(999998, 'a plain password')") == "P0001"
        assert outcome(conn, f"SELECT smsgw_node_login(999999, '{scram_verifier('x')}')") == "P0001"
        assert outcome(conn, "SELECT smsgw_node_drop(999999)") == "P0001"
        assert outcome(conn, "SELECT smsgw_node_drop(0)") == "P0001"
        with centre["db"].connect() as su:
            assert su.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = 'smsgw_node_999999'")).scalar() == 1
    finally:
        conn.close()
        with centre["db"].begin() as su:
            su.execute(text("DROP ROLE IF EXISTS smsgw_node_999999"))


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "-leading-dash"}, "name"),
        ({"name": "x" * 49}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "ok1", "modems": 0}, "modems"),
        ({"name": "ok2", "modems": 17}, "modems"),
        ({"name": "ok3", "modems": True}, "modems"),
        ({"name": "ok4", "site": "d e"}, "site"),
        ({"name": "ok5", "owner": "me"}, "owner"),
    ],
)
def test_a_bad_node_is_refused_with_its_field_and_nothing_is_kept(centre, body, field):
    r = centre["client"].post("/api/nodes", json=body, headers=centre["admin"].headers)
    assert r.status_code == 400 and field in r.get_json()["fields"], r.get_json()
    with centre["db"].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM nodes WHERE name = :n"), {"n": body["name"]}).scalar() == 0


def test_names_are_unique_and_only_admins_manage_nodes(centre):
    name = f"dup{secrets.token_hex(2)}"
    assert create(centre, centre["admin"], name=name).status_code == 201
    again = create(centre, centre["admin"], name=name.upper())
    assert again.status_code == 409 and again.get_json()["code"] == "node_exists"
    assert create(centre, centre["user"]).status_code == 403
    assert centre["client"].get("/api/nodes", headers=centre["user"].headers).status_code == 403
    assert centre["client"].get("/api/nodes").status_code == 401


def test_enrolment_attempts_are_limited_per_client_address(centre):
    guesser, neighbour = an_address(), an_address()
    codes = [enrol(centre, f"smsgw_enrol_guess{i}", guesser).status_code for i in range(7)]
    assert codes == [401] * 5 + [429] * 2  # LOGIN_MAX_ATTEMPTS=5 in the tests' settings
    # Another address is not held back, and a working token still works from it.
    node = create(centre, centre["admin"]).get_json()
    assert enrol(centre, node["token"], neighbour).status_code == 200
    with centre["db"].connect() as conn:
        failed = conn.execute(text("SELECT count(*) FROM logs WHERE action = 'node_enrol' AND status = 'failed'"))
        assert failed.scalar() >= 5


def test_without_provisioning_in_the_database_enrolment_says_what_to_run(client, alice):
    """The package's shared database was migrated without db-setup: no functions."""
    made = client.post("/api/nodes", json={"name": f"p{secrets.token_hex(3)}"}, headers=alice.headers)
    assert made.status_code == 201
    r = client.post(
        "/api/nodes/enrol", json={"token": made.get_json()["token"]}, environ_base={"REMOTE_ADDR": an_address()}
    )
    assert r.status_code == 503 and "db-setup" in r.get_json()["error"]


def test_node_rows_are_what_the_model_says(centre):
    with centre["db"].connect() as conn:
        assert set(Node.__table__.columns.keys()) <= {
            r[0]
            for r in conn.execute(text("SELECT column_name FROM information_schema.columns WHERE table_name = 'nodes'"))
        }


def test_a_modem_id_names_its_node_and_number_exactly_as_the_node_named_it():
    from smsgw_api.domain.nodes import modem_ids, node_and_number

    for name in ("berlin-1", "lyon", "a.b_c-9"):
        assert [node_and_number(m) for m in modem_ids(name, 3)] == [(name, 1), (name, 2), (name, 3)]
    for not_a_nodes in ("demo", "board-15550001000x", "-1", "usb-modem-a"):
        assert node_and_number(not_a_nodes) is None
