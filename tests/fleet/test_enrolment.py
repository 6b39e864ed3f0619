"""An edge node joins with nothing but its token (docs/deployment.md,
"Enrolment"): scripts/edge-join.py trades it over TLS verified against the
centre's certificate, and a modem worker started with the settings it wrote
reaches the centre's Postgres and broker with the node's own credentials
only: a Postgres set up by the stack's db-setup, where every role needs its
password, and a broker configured by the stack's entrypoint, which knows the
node's users only from the file the API wrote. Both as compose.centre.yml
runs them: Postgres with the centre's pg_hba.conf (TLS only over the
network), the broker's TLS listener from the entrypoint. A message bound to
the node's site is then sent through its modem."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import psycopg2
import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from support.api import api_env, make_persona
from support.private_postgres import PrivatePostgres
from support.processes import free_port
from support.tls import make_server_tls
from support.waits import wait_until
from support.workers import launch_worker

from smsgw_common.models import Message, Modem

ROOT = Path(__file__).resolve().parents[2]
JOIN = ROOT / "scripts" / "edge-join.py"
ENTRYPOINT = ROOT / "mosquitto" / "entrypoint.sh"
MOSQUITTO = "/usr/sbin/mosquitto"


def start_broker(directory: Path, tls, api_password: str, nodes_file: Path) -> tuple[subprocess.Popen, int, int]:
    """The stack's broker setup (entrypoint.sh: users, ACL, the nodes' file
    and its watcher, the TLS listener for edge nodes) on ports of this
    test's own: (process, plain port, TLS port)."""
    port, tls_port = free_port(), free_port()
    auth = directory / "auth"
    conf = directory / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings false\nallow_anonymous false\nuser root\n"
        f"password_file {auth / 'passwd'}\nacl_file {auth / 'acl'}\ninclude_dir {auth / 'conf.d'}\n"
        f"listener {port} 127.0.0.1\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "MQTT_PREFIX": "smsgw/",
        "MQTT_API_PASSWORD": api_password,
        "MQTT_STATS_COLLECTOR_PASSWORD": secrets.token_urlsafe(18),
        "MQTT_MODEM_PASSWORDS": f"centre-1:{secrets.token_urlsafe(18)}",
        "MOSQUITTO_AUTH_DIR": str(auth),
        "BOARDS_PASSWD_FILE": str(directory / "no-boards"),
        "NODES_PASSWD_FILE": str(nodes_file),
        "NODES_RELOAD_SECONDS": "0.5",
        "NODES_WRITER_UID": "0",
        "MOSQUITTO_EXEC": MOSQUITTO,
        "MQTT_TLS_CERT_FILE": str(tls.cert),
        "MQTT_TLS_KEY_FILE": str(tls.key),
        "MQTT_TLS_LISTENER": f"{tls_port} 127.0.0.1",
    }
    with open(directory / "mosquitto.log", "w") as log:
        proc = subprocess.Popen([str(ENTRYPOINT), "-c", str(conf)], env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, port, tls_port


@pytest.fixture
def centre(tmp_path, redis_url, python):
    tls = make_server_tls(tmp_path / "tls", "127.0.0.1")
    pg = PrivatePostgres(passwords=True, tls=tls)
    procs: list[subprocess.Popen] = []
    server = None
    try:
        passwords = pg.db_setup("smsgw")
        pg.use_hba(ROOT / "postgres" / "centre" / "pg_hba.conf")
        nodes_file = tmp_path / "nodes" / "passwd"
        nodes_file.parent.mkdir()
        mqtt_api_password = secrets.token_urlsafe(18)
        broker, mqtt_port, mqtt_tls_port = start_broker(tmp_path, tls, mqtt_api_password, nodes_file)
        procs.append(broker)
        from werkzeug.serving import make_server

        from smsgw_api import create_app
        from smsgw_api.core.extensions import bus, db

        api_url = f"postgresql+psycopg2://smsgw_api:{passwords['POSTGRES_API_PASSWORD']}@127.0.0.1:{pg.port}/smsgw"
        env = api_env(
            api_url,
            redis_url,
            "smsgw/",
            NODES_BROKER_FILE=nodes_file,
            MQTT_PORT=mqtt_port,
            MQTT_API_USERNAME="api",
            MQTT_API_PASSWORD=mqtt_api_password,
            NODE_UNREACHABLE_SECONDS=18,
        )
        app = create_app({"ENV": env, "TESTING": True})
        https = free_port()
        server = make_server("127.0.0.1", https, app, threaded=True, ssl_context=(str(tls.cert), str(tls.key)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        superuser = create_engine(pg.socket_url("smsgw"))
        admin = make_persona(superuser, "enrol-admin", "admin")
        yield {
            "url": f"https://127.0.0.1:{https}",
            "tls": tls,
            "admin": admin,
            "db": superuser,
            "pg": pg,
            "mqtt_port": mqtt_tls_port,
            "dir": tmp_path,
        }
        bus.stop(app)
        db.dispose(app)
        superuser.dispose()
    finally:
        if server is not None:
            server.shutdown()
        for proc in procs:
            proc.terminate()
            proc.wait(5)
        pg.close()


def join(centre, token: str, ca: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(JOIN), "--centre", centre["url"], "--token", token, "--ca", str(ca), "--out", str(out),
         "--db-port", str(centre["pg"].port), "--mqtt-port", str(centre["mqtt_port"])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def test_a_node_joins_with_its_token_and_its_modem_sends_with_the_nodes_own_credentials(centre, python):
    http = requests.Session()
    http.verify = str(centre["tls"].ca)
    http.trust_env = False
    made = http.post(
        f"{centre['url']}/api/nodes",
        json={"name": "lyon-1", "site": "fr", "modems": 1},
        headers=centre["admin"].headers,
    )
    assert made.status_code == 201, made.text
    token = made.json()["token"]

    # A centre whose certificate the node does not trust gets no token.
    stranger = make_server_tls(centre["dir"] / "stranger", "127.0.0.1")
    refused = join(centre, token, stranger.ca, centre["dir"] / "refused.env")
    assert refused.returncode == 2 and "is not the centre in --ca" in refused.stderr, refused.stderr
    assert not (centre["dir"] / "refused.env").exists()

    edge = centre["dir"] / "edge"
    edge.mkdir()
    done = join(centre, token, centre["tls"].ca, edge / "edge.env")
    assert done.returncode == 0, done.stderr
    assert (edge / "edge.env").stat().st_mode & 0o077 == 0
    settings = read_env(edge / "edge.env")
    assert settings["NODE_NAME"] == "lyon-1" and settings["SITE"] == "fr" and settings["MODEM_1_ID"] == "lyon-1-1"
    assert "sslmode=verify-full" in settings["DATABASE_URL"] and "smsgw_node_" in settings["DATABASE_URL"]
    assert settings["MQTT_KEEPALIVE"] == "12"  # the centre's NODE_UNREACHABLE_SECONDS=18, over 1.5
    # Over the network the centre's Postgres speaks only TLS, to every role.
    plain = settings["DATABASE_URL"].replace("+psycopg2", "").split("?")[0] + "?sslmode=disable"
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(plain, connect_timeout=10).close()
    psycopg2.connect(settings["DATABASE_URL"].replace("+psycopg2", ""), connect_timeout=10).close()
    again = join(centre, token, centre["tls"].ca, centre["dir"] / "again.env")
    assert again.returncode == 2 and "refused the token (401)" in again.stderr

    # The node's worker, with nothing but what edge-join.py wrote.
    worker_env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": settings["DATABASE_URL"],
        "MQTT_HOST": settings["MQTT_HOST"],
        "MQTT_PORT": settings["MQTT_PORT"],
        "MQTT_CA_FILE": settings["MQTT_CA_FILE"],
        "MQTT_KEEPALIVE": settings["MQTT_KEEPALIVE"],
        "MQTT_PREFIX": "smsgw/",
        "NODE_NAME": settings["NODE_NAME"],
        "SITE": settings["SITE"],
        "MQTT_MODEM_WORKER_USERNAME": settings["MODEM_1_ID"],
        "MQTT_MODEM_WORKER_PASSWORD": settings["MODEM_1_MQTT_PASSWORD"],
        "WORKER_DATA_DIR": str(edge / "data"),
    }
    worker = launch_worker(worker_env, python, edge, modem_id=settings["MODEM_1_ID"])
    try:

        def online():
            with Session(centre["db"]) as s:
                m = s.get(Modem, "lyon-1-1")
                return m is not None and m.online and (m.node, m.site) == ("lyon-1", "fr")

        wait_until(online, 30, 0.2, lambda: f"the node's modem online at the centre: {worker.service.log()[-3000:]}")
        sent = http.post(
            f"{centre['url']}/api/sms",
            json={"recipient": "+33612345678", "message": "via Lyon", "site": "fr"},
            headers=centre["admin"].headers,
        )
        assert sent.status_code == 200, sent.text

        def status():
            with Session(centre["db"]) as s:
                return s.get(Message, sent.json()["message_id"]).status

        wait_until(
            lambda: status() in ("sent", "delivered"), 30, 0.2, lambda: f"the send: {worker.service.log()[-3000:]}"
        )
        with centre["db"].connect() as conn:  # it ran as the node's role, not the workers' shared one
            users = {
                r[0] for r in conn.execute(text("SELECT usename FROM pg_stat_activity WHERE usename LIKE 'smsgw_%'"))
            }
        assert any(u.startswith("smsgw_node_") for u in users) and "smsgw_worker" not in users, users
    finally:
        worker.service.stop()
