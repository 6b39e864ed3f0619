"""Trust boundaries inside the running stack (docs/security.md): each service's
database role, secrets, networks and broker user let it do its own job and
nothing else, and nginx bounds what one client address may hold open.

Each test drives the real containers: it runs code *inside* a service's
container with that service's own environment (its own credentials), the way
an attacker who took over that service would.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import time

import pytest
import requests

from .support import wait_for

pytestmark = pytest.mark.stack

WORKER = "modem-worker-demo-1"

# Runs inside a Python service container, connecting with that container's
# own POSTGRES_* settings; prints what each statement did.
DB_PROBE = r"""
import json, os, sys
import psycopg2
conn = psycopg2.connect(host=os.environ["POSTGRES_HOST"], port=os.environ["POSTGRES_PORT"],
                        dbname=os.environ["POSTGRES_DB"], user=os.environ["POSTGRES_USER"],
                        password=os.environ["POSTGRES_PASSWORD"], connect_timeout=10)
out = {}
for name, statement in json.loads(sys.stdin.read()):
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            out[name] = ["ok", cur.fetchall() if cur.description else None]
    except psycopg2.Error as exc:
        out[name] = ["error", exc.pgcode, str(exc).strip()]
    # Whatever happened (a DROP that went through included) is rolled back.
    conn.rollback()
print(json.dumps(out, default=str))
"""


def db_probe(stack, service: str, **statements: str) -> dict:
    result = stack.compose("exec", "-T", service, "python", "-c", DB_PROBE, input=json.dumps(list(statements.items())))
    return json.loads(result.stdout)


def refused(outcome) -> bool:
    return outcome[0] == "error" and outcome[1] == "42501"  # insufficient_privilege


def test_a_modem_worker_cannot_read_users_or_keys_nor_drop_a_table(stack):
    probe = db_probe(
        stack,
        WORKER,
        users="SELECT count(*) FROM users",
        api_keys="SELECT count(*) FROM api_keys",
        webhooks="SELECT count(*) FROM webhooks",
        drop="DROP TABLE users CASCADE",
        create="CREATE TABLE worker_was_here (id int)",
        # What it needs for its job (the send test proves the rest):
        messages="SELECT count(*) FROM messages",
        sim_cards="SELECT count(*) FROM sim_cards",
    )
    for name in ("users", "api_keys", "webhooks", "drop", "create"):
        assert refused(probe[name]), f"{name}: {probe[name]}"
    assert probe["messages"][0] == "ok" and probe["sim_cards"][0] == "ok", probe


def test_the_stats_collector_reads_its_samples_and_nothing_else(stack):
    probe = db_probe(
        stack,
        "stats-collector",
        users="SELECT count(*) FROM users",
        messages="SELECT count(*) FROM messages",
        drop="DROP TABLE stat_samples",
        samples="SELECT count(*) FROM stat_samples",
    )
    for name in ("users", "messages", "drop"):
        assert refused(probe[name]), f"{name}: {probe[name]}"
    assert probe["samples"][0] == "ok", probe


def test_no_service_role_is_a_superuser_nor_owns_the_schema(stack):
    probe = db_probe(
        stack,
        "api",
        me="SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
        "FROM pg_roles WHERE rolname = current_user",
        # The owner of the tables, who runs the migrations, is no superuser either.
        owner="SELECT DISTINCT r.rolname, r.rolsuper, r.rolcreaterole FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner "
        "WHERE n.nspname = 'public' AND c.relkind = 'r'",
        drop="DROP TABLE users CASCADE",
        alter="ALTER TABLE users ADD COLUMN api_was_here int",
        version="UPDATE alembic_version SET version_num = version_num",
        superusers="SELECT rolname FROM pg_roles WHERE rolsuper AND rolname LIKE 'smsgw\\_%'",
    )
    assert probe["me"][0] == "ok", probe["me"]
    ((user, superuser, createrole, createdb, bypassrls),) = probe["me"][1]
    assert user == "smsgw_api"
    assert not (superuser or createrole or createdb or bypassrls), probe["me"]
    owners = probe["owner"][1]
    assert len(owners) == 1 and owners[0][0] != user and owners[0][1:] == [False, False], owners
    for name in ("drop", "alter", "version"):
        assert refused(probe[name]), f"{name}: {probe[name]}"
    assert probe["superusers"][1] == [], probe["superusers"]


def service_env(stack, service: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in stack.inspect(service)["Config"]["Env"])


def test_each_service_gets_only_the_secrets_it_uses(stack):
    for service in ("api", WORKER, "modem-worker-demo-2", "stats-collector", "dashboard", "mosquitto", "redis"):
        env = service_env(stack, service)
        values = set(env.values())
        # The superuser's and the schema owner's passwords: postgres and the
        # short-lived db-setup job only.
        assert stack.env["POSTGRES_PASSWORD"] not in values, service
        assert stack.env["POSTGRES_OWNER_PASSWORD"] not in values, service
        # Redis is the API's alone.
        if service not in ("api", "redis"):
            assert "REDIS_PASSWORD" not in env and stack.env["REDIS_PASSWORD"] not in values, service
        if service != "api":
            assert stack.env["JWT_SECRET"] not in values, service
            assert stack.env["POSTGRES_API_PASSWORD"] not in values, service
        if service.startswith("modem-worker"):
            # Its own broker login only, not its neighbour's.
            other = "DEMO_2" if service == WORKER else "DEMO_1"
            assert stack.env[f"MQTT_MODEM_{other}_PASSWORD"] not in values, service
            assert env["POSTGRES_USER"] == "smsgw_worker", service


# Runs inside a service container: can it open a TCP connection to host:port?
TCP_PROBE_PY = r"""
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        out[target] = "connected"
    except OSError as exc:
        out[target] = type(exc).__name__
print(json.dumps(out))
"""


def reachable(stack, service: str, *targets: str) -> dict[str, bool]:
    if service == "dashboard":  # nginx's image has bash, not Python
        out = {}
        for target in targets:
            host, port = target.rsplit(":", 1)
            done = stack.exec(service, "timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}", check=False)
            out[target] = done.returncode == 0
        return out
    done = stack.exec(service, "python", "-c", TCP_PROBE_PY, *targets, timeout=90)
    return {t: r == "connected" for t, r in json.loads(done.stdout).items()}


@pytest.mark.parametrize(
    "service, allowed, denied",
    [
        ("dashboard", ["api:5001"], ["postgres:5432", "redis:6379", "mosquitto:1883", f"{WORKER}:7101"]),
        ("stats-collector", ["postgres:5432", "mosquitto:1883"], ["redis:6379", "api:5001", f"{WORKER}:7101"]),
        (WORKER, ["postgres:5432", "mosquitto:1883"], ["redis:6379", "api:5001", "modem-worker-demo-2:7101"]),
    ],
)
def test_each_service_reaches_only_what_it_talks_to(stack, service, allowed, denied):
    result = reachable(stack, service, *allowed, *denied)
    assert {t: result[t] for t in allowed} == dict.fromkeys(allowed, True), result
    assert {t: result[t] for t in denied} == dict.fromkeys(denied, False), result


def retained_state(stack, modem_id: str) -> str:
    done = stack.exec(
        "mosquitto",
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-u",
        "stats-collector",
        "-P",
        stack.env["MQTT_STATS_COLLECTOR_PASSWORD"],
        "-t",
        f"smsgw/modems/{modem_id}/state",
        "-C",
        "1",
        "-W",
        "4",
        check=False,
    )
    return done.stdout.strip()


def test_a_modem_worker_cannot_publish_another_modems_state(stack):
    before = wait_for(lambda: retained_state(stack, "demo-2"), 60, what="demo-2's retained state")
    assert json.loads(before)["online"] is True
    # demo-1's own broker login, as its container has it.
    env = service_env(stack, WORKER)
    forged = json.dumps({"modem_id": "demo-2", "online": False, "forged_by": "demo-1"})
    done = stack.exec(
        "mosquitto",
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-u",
        env["MQTT_MODEM_WORKER_USERNAME"],
        "-P",
        env["MQTT_MODEM_WORKER_PASSWORD"],
        "-t",
        "smsgw/modems/demo-2/state",
        "-r",
        "-q",
        "1",
        "-m",
        forged,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # MQTT 3.1.1: the broker drops it silently
    time.sleep(1)
    after = retained_state(stack, "demo-2")
    assert "forged_by" not in after and json.loads(after)["online"] is True, after
    # Nor log in as demo-2 with its own password.
    done = stack.exec(
        "mosquitto",
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-u",
        "demo-2",
        "-P",
        env["MQTT_MODEM_WORKER_PASSWORD"],
        "-t",
        "smsgw/modems/demo-2/state",
        "-q",
        "1",
        "-m",
        "{}",
        check=False,
    )
    assert done.returncode != 0 and "not authorised" in done.stdout + done.stderr


def test_nginx_refuses_one_address_holding_too_many_slow_requests(stack, tls_cert):
    """200 requests whose bodies trickle in (a byte every 3 s, inside the 10 s
    body timeout) from one address: nginx serves the first 100 (limit_conn)
    and answers the rest 429 at once; after they go, a normal client is served."""
    context = ssl.create_default_context(cafile=tls_cert)
    context.check_hostname = False
    port = int(stack.https.rsplit(":", 1)[1])
    head = (
        b"POST /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{"
    )
    slow: list[tuple[ssl.SSLSocket, float]] = []
    answered_429 = 0
    deadline = time.monotonic() + 60
    try:
        for _ in range(200):
            assert time.monotonic() < deadline
            sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
            sock.sendall(head)
            sock.settimeout(0.05)
            try:
                data = sock.recv(200)  # refused at once, or still reading our body
            except TimeoutError:
                data = b""
            if data.startswith(b"HTTP/1.1 429"):
                answered_429 += 1
                sock.close()
            else:
                assert data == b"", data[:200]
                slow.append((sock, time.monotonic()))
            # Under limit_req's 30 requests/s: only limit_conn may refuse.
            time.sleep(0.04)
            now = time.monotonic()
            for i, (s, last) in enumerate(slow):
                if now - last > 3:
                    s.sendall(b" ")
                    slow[i] = (s, now)
        # On a loaded machine a refusal can take longer than the 50 ms looked
        # for above: a socket that has an answer waiting now was refused too.
        # (Readable can also mean a TLS 1.3 session ticket, with no answer behind it.)
        waiting, _, _ = select.select([s for s, _ in slow], [], [], 1.0)
        for s in waiting:
            try:
                answer = s.recv(200)
            except TimeoutError:
                continue
            if answer.startswith(b"HTTP/1.1 429"):
                answered_429 += 1
                s.close()
        slow = [(s, last) for s, last in slow if s.fileno() != -1]
        # limit_conn per_client 100 (the API session of the other tests holds
        # at most an idle keep-alive connection, which does not count).
        assert len(slow) == 100 and answered_429 == 100, (len(slow), answered_429)
        probe = requests.get(f"{stack.https}/api/sms/inbox", verify=tls_cert, timeout=10)
        assert probe.status_code == 429 and probe.json()["code"] == "rate_limited", probe.text
    finally:
        for s, _ in slow:
            s.close()

    def served():
        resp = requests.get(f"{stack.https}/api/sms/inbox", verify=tls_cert, timeout=10)
        return resp.status_code == 401  # served by the API (no login), not refused by nginx

    wait_for(served, 20, what="a normal request served after the slow clients left")
