"""The boards' broker access: users from scripts/board-user.py, the password
file and ACL that mosquitto/entrypoint.sh writes, in a disposable Mosquitto
of this test's own on 127.0.0.1 (the shared broker on 1883 allows anonymous
clients and has no ACL)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from .conftest import random_number, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "mosquitto" / "entrypoint.sh"
BOARD_USER = ROOT / "scripts" / "board-user.py"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A client that records what it receives and how its connection went."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None, ca: Path | None = None):
        self.messages: list[tuple[str, bytes]] = []
        self.result: ReasonCode | None = None
        self.done = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{secrets.token_hex(4)}")
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.done.wait(5), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.result = reason_code
        self.done.set()
        if reason_code.is_failure:
            client.disconnect()

    @property
    def accepted(self) -> bool:
        return self.result is not None and not self.result.is_failure

    def subscribe(self, *topics: str) -> None:
        granted = threading.Event()
        self.client.on_subscribe = lambda *a: granted.set()
        self.client.subscribe([(t, 1) for t in topics])
        assert granted.wait(5)

    def publish(self, topic: str, payload: bytes = b"{}") -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    """start(anonymous=False, demo=False) -> (port, {user: password}, board numbers).

    The broker's files come from the real mosquitto/entrypoint.sh (run here
    outside its image), which then execs a local mosquitto."""
    procs: list[subprocess.Popen] = []
    clients: list[Client] = []

    def start(anonymous: bool = False, demo: str | None = None, tls: dict[str, str] | None = None):
        boards_file = tmp_path / "boards" / "passwd"
        numbers = [random_number()[1:], random_number()[1:]]
        passwords = {}
        for number in numbers:
            out = subprocess.run(
                [str(BOARD_USER), "add", "+" + number, "--file", str(boards_file)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            passwords[number] = out.split("MQTT password: ")[1].strip()
        # A USB modem's worker and the worker of the first board.
        for user in ("api", "stats-collector", "usb-1", f"board-{numbers[0]}", "demo"):
            passwords[user] = secrets.token_urlsafe(18)
        auth = tmp_path / "auth"
        port = free_port()
        (tmp_path / "mosquitto.conf").write_text(
            "per_listener_settings false\nallow_anonymous false\nuser root\n"
            f"password_file {auth / 'passwd'}\nacl_file {auth / 'acl'}\nlistener {port} 127.0.0.1\n"
            f"include_dir {auth / 'conf.d'}\n"
        )
        env = {
            "PATH": os.environ["PATH"],
            "MQTT_PREFIX": "smsgw/",
            "MQTT_API_PASSWORD": passwords["api"],
            "MQTT_STATS_COLLECTOR_PASSWORD": passwords["stats-collector"],
            "MQTT_MODEM_PASSWORDS": f"usb-1:{passwords['usb-1']} board-{numbers[0]}:{passwords['board-' + numbers[0]]}",
            "MQTT_BOARDS_ANONYMOUS": "1" if anonymous else "",
            "MOSQUITTO_AUTH_DIR": str(auth),
            "BOARDS_PASSWD_FILE": str(boards_file),
            "NODES_PASSWD_FILE": str(tmp_path / "nodes" / "passwd"),
            "NODES_RELOAD_SECONDS": "0.3",
            "NODES_WRITER_UID": "0",
            "MOSQUITTO_EXEC": MOSQUITTO,
        }
        if demo:
            env.update(DEMO_BOARD_NUMBER="+" + demo, MQTT_DEMO_BOARD_PASSWORD=passwords["demo"])
        env.update(tls or {})
        with open(tmp_path / "mosquitto.log", "w") as log:
            proc = subprocess.Popen(
                [str(ENTRYPOINT), "-c", str(tmp_path / "mosquitto.conf")], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        procs.append(proc)

        def listening():
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "mosquitto.log").read_text())
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 10, 0.05, "the broker to listen")
        return port, passwords, numbers

    def connect(port: int, user: str | None = None, password: str | None = None) -> Client:
        client = Client(port, user, password)
        clients.append(client)
        return client

    yield start, connect
    for client in clients:
        client.close()
    for proc in procs:
        proc.terminate()
        proc.wait(5)


def test_a_board_and_its_worker_reach_only_each_other_and_the_seeds_topics(broker):
    start, connect = broker
    port, passwords, (alice, bob) = start()
    worker = connect(port, f"board-{alice}", passwords[f"board-{alice}"])
    usb = connect(port, "usb-1", passwords["usb-1"])
    api = connect(port, "api", passwords["api"])
    a = connect(port, alice, passwords[alice])
    b = connect(port, bob, passwords[bob])
    assert all(c.accepted for c in (worker, usb, api, a, b))
    worker.subscribe("/sms/status", "/sms/receive")
    usb.subscribe("/sms/status", "/sms/receive", "sms/send/#")
    api.subscribe("smsgw/events/messages", "smsgw/modems/+/state")
    a.subscribe(f"sms/send/{alice}", f"sms/send/{bob}", "sms/send/#", "smsgw/#", "/sms/status")
    b.subscribe(f"sms/send/{bob}")

    worker.publish(f"sms/send/{alice}", b"for alice")
    worker.publish(f"sms/send/{bob}", b"worker to bob")
    worker.publish("smsgw/events/messages", b"event from the worker")
    worker.publish(f"smsgw/modems/board-{alice}/state", b"state")
    usb.publish(f"sms/send/{alice}", b"usb to alice")
    a.publish("/sms/status", b"status from alice")
    a.publish("/sms/receive", b"receive from alice")
    a.publish(f"sms/send/{bob}", b"alice to bob")
    a.publish("smsgw/events/messages", b"alice forging an event")
    a.publish(f"smsgw/modems/board-{alice}/state", b"alice forging a state")

    # Each client's last allowed message arrives after anything published
    # before it: once it is in, what was refused would be in too.
    worker.publish(f"sms/send/{alice}", b"last")
    wait_until(lambda: [p for _, p in a.messages if p == b"last"], what="the last send")
    wait_until(lambda: len(worker.messages) >= 2 and len(api.messages) >= 2, what="the allowed messages")
    assert [p for _, p in a.messages] == [b"for alice", b"last"]
    assert sorted(p for _, p in worker.messages) == [b"receive from alice", b"status from alice"]
    assert sorted(p for _, p in api.messages) == [b"event from the worker", b"state"]
    assert b.messages == [] and usb.messages == []


def test_a_wrong_password_and_a_client_without_a_user_are_refused(broker):
    start, connect = broker
    port, passwords, (alice, _) = start()
    assert not connect(port, alice, passwords[alice] + "x").accepted
    assert not connect(port).accepted
    assert not connect(port, "4900000000", passwords[alice]).accepted


def test_the_anonymous_opt_in_lets_clients_without_a_user_speak_only_the_board_topics(broker):
    start, connect = broker
    port, passwords, (alice, _) = start(anonymous=True)
    worker = connect(port, f"board-{alice}", passwords[f"board-{alice}"])
    api = connect(port, "api", passwords["api"])
    anonymous = connect(port)
    assert anonymous.accepted
    worker.subscribe("/sms/status")
    api.subscribe("smsgw/events/messages")
    anonymous.subscribe(f"sms/send/{alice}", "smsgw/#")

    worker.publish(f"smsgw/modems/board-{alice}/state", b"state")
    worker.publish(f"sms/send/{alice}", b"for alice")
    anonymous.publish("/sms/status", b"anonymous status")
    anonymous.publish("smsgw/events/messages", b"anonymous forging an event")
    worker.publish("smsgw/events/messages", b"event from the worker")

    wait_until(lambda: anonymous.messages and worker.messages and api.messages, what="the allowed messages")
    worker.publish(f"sms/send/{alice}", b"last")
    wait_until(lambda: len(anonymous.messages) == 2, what="the last send")
    assert [p for _, p in anonymous.messages] == [b"for alice", b"last"]
    assert [p for _, p in worker.messages] == [b"anonymous status"]
    assert [p for _, p in api.messages] == [b"event from the worker"]


def test_without_the_opt_in_no_client_may_connect_anonymously_even_with_boards_configured(broker):
    start, connect = broker
    port, _, _ = start(anonymous=False)
    assert not connect(port).accepted


def test_the_demo_board_logs_in_with_its_generated_password_and_is_confined_like_any_board(broker):
    start, connect = broker
    demo = "15550001000"
    port, passwords, (alice, _) = start(demo=demo)
    board = connect(port, demo, passwords["demo"])
    assert board.accepted
    worker = connect(port, f"board-{alice}", passwords[f"board-{alice}"])
    worker.subscribe("/sms/status")
    board.subscribe(f"sms/send/{demo}", f"sms/send/{alice}")
    worker.publish(f"sms/send/{alice}", b"for alice")
    board.publish("/sms/status", b"demo status")
    wait_until(lambda: worker.messages, what="the demo board's status")
    assert board.messages == []


def test_board_user_refuses_what_is_not_a_number_and_keeps_only_hashes(tmp_path):
    passwd = tmp_path / "passwd"
    refused = subprocess.run([str(BOARD_USER), "add", "+49abc", "--file", str(passwd)], capture_output=True, text=True)
    assert refused.returncode != 0 and "E.164" in refused.stderr
    added = subprocess.run(
        [str(BOARD_USER), "add", "+4915112345678", "--file", str(passwd)], capture_output=True, text=True, check=True
    )
    password = added.stdout.split("MQTT password: ")[1].strip()
    line = passwd.read_text().strip()
    assert line.startswith("4915112345678:$7$101$") and password not in line
    assert passwd.stat().st_mode & 0o077 == 0
    subprocess.run(
        [str(BOARD_USER), "remove", "+4915112345678", "--file", str(passwd)], check=True, capture_output=True
    )
    assert passwd.read_text() == ""


def test_an_edge_nodes_modem_users_come_and_go_with_the_apis_file_without_a_restart(broker, tmp_path):
    """The API writes the nodes' users as admins enrol and revoke nodes
    (routes/nodes.py); the entrypoint's watcher reloads the running broker."""
    from smsgw_api.domain.nodes import mosquitto_hash

    start, connect = broker
    port, passwords, _ = start()
    nodes = tmp_path / "nodes" / "passwd"
    nodes.parent.mkdir()
    node_password = secrets.token_urlsafe(24)
    nodes.write_text(f"berlin-1-1:{mosquitto_hash(node_password)}\n")

    def joined():
        c = Client(port, "berlin-1-1", node_password)
        if not c.accepted:
            c.close()
            return None
        return c

    edge = wait_until(joined, 10, 0.2, "the node's user to be let in")
    api = connect(port, "api", passwords["api"])
    api.subscribe("smsgw/modems/+/state")
    edge.publish("smsgw/modems/berlin-1-1/state", b"mine")
    edge.publish("smsgw/modems/usb-1/state", b"not mine")
    wait_until(lambda: ("smsgw/modems/berlin-1-1/state", b"mine") in api.messages, 5, 0.05, "its own state")

    # A file that fails the checks leaves the users as they were.
    nodes.write_text("berlin-1-1:a plain password\n")
    time.sleep(1.5)
    again = Client(port, "berlin-1-1", node_password)
    assert again.accepted
    again.close()

    nodes.write_text("")  # revoked
    wait_until(lambda: not Client(port, "berlin-1-1", node_password).accepted, 10, 0.2, "the user to be refused")
    # The reload also ends the session it had open, and it cannot come back.
    wait_until(lambda: not edge.client.is_connected(), 5, 0.1, "its open session to end")
    time.sleep(1)
    assert not edge.client.is_connected()
    assert ("smsgw/modems/usb-1/state", b"not mine") not in api.messages
    edge.close()


def test_a_centre_broker_also_listens_over_tls_with_the_certificate_it_is_given(broker, tmp_path):
    """compose.centre.yml: edge nodes' workers reach the broker on a TLS port
    (MQTT_TLS_*), with the same users and ACL as the plain listener."""
    from support.tls import make_server_tls

    tls = make_server_tls(tmp_path / "tls", "127.0.0.1")
    start, connect = broker
    tls_port = free_port()
    files = {"MQTT_TLS_CERT_FILE": str(tls.cert), "MQTT_TLS_KEY_FILE": str(tls.key)}
    port, passwords, _ = start(tls={**files, "MQTT_TLS_LISTENER": f"{tls_port} 127.0.0.1"})
    wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", tls_port)) == 0, 10, 0.05, "the TLS listener")

    worker = Client(tls_port, "usb-1", passwords["usb-1"], ca=tls.ca)
    assert worker.accepted
    api = connect(port, "api", passwords["api"])
    api.subscribe("smsgw/modems/+/state")
    worker.publish("smsgw/modems/usb-1/state", b"over tls")
    wait_until(lambda: ("smsgw/modems/usb-1/state", b"over tls") in api.messages, 5, 0.05, "the state over TLS")
    worker.close()
    # The ACL is the same on both listeners: still only its own topics.
    worker = Client(tls_port, "usb-1", passwords["usb-1"], ca=tls.ca)
    worker.publish("smsgw/modems/board-x/state", b"not mine")
    worker.close()
    # Without a password, or without TLS on that port, nobody gets in.
    assert not Client(tls_port, "usb-1", "wrong", ca=tls.ca).accepted
    with pytest.raises(AssertionError, match="no CONNACK"):
        Client(tls_port, "usb-1", passwords["usb-1"])
    assert ("smsgw/modems/board-x/state", b"not mine") not in api.messages


def test_a_broker_given_half_a_certificate_does_not_start(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "MQTT_API_PASSWORD": secrets.token_urlsafe(18),
        "MQTT_STATS_COLLECTOR_PASSWORD": secrets.token_urlsafe(18),
        "MQTT_MODEM_PASSWORDS": f"usb-1:{secrets.token_urlsafe(18)}",
        "MOSQUITTO_AUTH_DIR": str(tmp_path / "auth"),
        "NODES_PASSWD_FILE": str(tmp_path / "nodes" / "passwd"),
        "BOARDS_PASSWD_FILE": str(tmp_path / "boards" / "passwd"),
        "MOSQUITTO_EXEC": "/bin/true",
        "MQTT_TLS_CERT_FILE": str(tmp_path / "missing.pem"),
    }
    done = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE must both name readable files" in done.stderr
