"""The operator's first hour, on a stack of its own: it starts with no modem
configured, the API says how to add one, `make add-modem EMULATOR=generic`
(scripts/add-modem.sh) adds an emulated modem that sends an SMS to
`delivered`, and `make remove-modem` takes it away again. No anonymous
volumes are left behind, and `make up` ends with the login box.

A second compose project (the CI stack runs the demo modems, so it is never
without one), on its own ports, env file and modems file; the images are
the ones .ci/stack.sh built."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from .support import ROOT, env_file_values, message, wait_for

# Four starts of the stack (up, add, up again, remove) and a health grace period.
pytestmark = [pytest.mark.stack, pytest.mark.timeout(1500)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FirstHour:
    def __init__(self, tmp: Path, image_prefix: str | None):
        self.project = f"{os.environ['SMSGW_STACK_PROJECT']}-fh"
        self.env_file = tmp / "first-hour.env"
        self.modems_file = tmp / "compose.modems.yml"
        self.https_port = free_port()
        self.http_port = free_port()
        lines = [
            "DASHBOARD_BIND=127.0.0.1",
            f"DASHBOARD_HTTPS_PORT={self.https_port}",
            f"DASHBOARD_HTTP_PORT={self.http_port}",
        ]
        if image_prefix:
            lines.append(f"SMSGW_IMAGE_PREFIX={image_prefix}")
        self.env_file.write_text("\n".join(lines) + "\n")
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "SMSGW_ENV_FILE": str(self.env_file),
            "SMSGW_MODEMS_FILE": str(self.modems_file),
        }

    def run_script(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ROOT / "scripts" / args[0]), *args[1:]],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def script(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        out = self.run_script(*args, timeout=timeout)
        assert out.returncode == 0, f"{args}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        files = ["-f", "docker-compose.yml"]
        if self.modems_file.exists():
            files += ["-f", str(self.modems_file)]
        cmd = ["docker", "compose", "-p", self.project, *files, "--env-file", str(self.env_file), *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def inspect(self, service: str) -> dict:
        cid = self.compose("ps", "-q", service).stdout.split()
        assert cid, f"no container for {service}"
        out = subprocess.run(["docker", "inspect", cid[0]], capture_output=True, text=True, check=True, timeout=60)
        return json.loads(out.stdout)[0]

    def session(self) -> requests.Session:
        pem = self.compose("exec", "-T", "dashboard", "cat", "/etc/nginx/tls/cert.pem").stdout
        cert = self.env_file.with_name("cert.pem")
        cert.write_text(pem)
        s = requests.Session()
        s.trust_env = False
        s.verify = str(cert)
        s.base = f"https://127.0.0.1:{self.https_port}"
        values = env_file_values(str(self.env_file))
        resp = s.post(
            f"{s.base}/api/auth",
            json={"username": "admin", "password": values["ADMIN_PASSWORD"]},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        s.headers["Authorization"] = f"Bearer {resp.json()['token']}"
        return s


@pytest.fixture
def first_hour(stack, tmp_path):
    fh = FirstHour(tmp_path, stack.env.get("SMSGW_IMAGE_PREFIX"))
    # Leftovers of an interrupted run (its data would not match fresh secrets).
    for kind in ("container", "volume", "network"):
        label = f"label=com.docker.compose.project={fh.project}"
        ids = subprocess.run(
            ["docker", kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter", label],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if ids:
            rm = ["docker", kind, "rm", *(["-f"] if kind == "container" else []), *ids]
            subprocess.run(rm, capture_output=True, timeout=120)
    try:
        yield fh
    finally:
        fh.compose("--profile", "*", "down", "-v", "--remove-orphans", timeout=300)


def image_id(tag: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def anonymous_volumes(fh: FirstHour) -> list[str]:
    ids = fh.compose("ps", "-aq").stdout.split()
    out = subprocess.run(
        ["docker", "inspect", "-f", '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}', *ids],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return [name for name in out if re.fullmatch(r"[0-9a-f]{64}", name)]


def test_an_operator_adds_an_emulated_modem_sends_through_it_and_removes_it(first_hour):
    fh = first_hour
    up = fh.script("up.sh", timeout=900)
    assert "Admin username:     admin" in up.stdout
    assert env_file_values(str(fh.env_file))["ADMIN_PASSWORD"] in up.stdout  # first start: shown once
    assert "ADMIN_PASSWORD" in up.stdout and "Account page" in up.stdout
    assert anonymous_volumes(fh) == []
    api = fh.session()

    listing = api.get(f"{api.base}/api/modems", timeout=10).json()
    assert listing["count"] == 0 and "make add-modem" in listing["guidance"]["fix"]
    refused = api.post(f"{api.base}/api/sms", json={"recipient": "+4915112345678", "message": "x"}, timeout=10)
    assert refused.status_code == 503 and refused.json()["reason"] == "no_modem"

    added = fh.script("add-modem.sh", "EMULATOR=generic", timeout=600)
    assert "modem emu-1 added" in added.stdout
    assert "MODEM_ID: emu-1" in fh.modems_file.read_text()
    assert "emu-1:" in env_file_values(str(fh.env_file))["MQTT_MODEM_PASSWORDS"]

    def emu_online():
        modems = api.get(f"{api.base}/api/modems", timeout=10).json()["modems"]
        return [m for m in modems if m["id"] == "emu-1" and m["online"] and m["sim_card_id"]]

    modem = wait_for(emu_online, 120, what="the emulated modem online with its SIM")[0]
    assert modem["problems"] == []

    text = f"first hour {uuid.uuid4().hex[:10]}"
    resp = api.post(f"{api.base}/api/sms", json={"recipient": "+4915112345678", "message": text}, timeout=10)
    assert resp.status_code == 200, resp.text
    message_id = resp.json()["message_id"]
    wait_for(lambda: message(api, message_id)["status"] == "delivered", 90, what="delivery report")

    # A second modem runs the same image: built once, not once per modem.
    fh.script("add-modem.sh", "EMULATOR=generic", timeout=600)
    images = {fh.inspect(f"modem-worker-{m}")["Image"] for m in ("emu-1", "emu-2")}
    tag = f"{env_file_values(str(fh.env_file)).get('SMSGW_IMAGE_PREFIX') or 'smsgw'}/modem-worker:latest"
    assert images == {image_id(tag)}

    # A port the worker cannot open (root's only): unhealthy after the grace
    # period, so `docker compose ps` says what the dashboard says.
    node = fh.env_file.with_name("ttyNOACCESS")
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    bad = fh.run_script("add-modem.sh", f"PORT={node}", "ID=bad-port", timeout=600)
    assert bad.returncode != 0 and "did not become healthy" in bad.stderr
    assert fh.inspect("modem-worker-bad-port")["State"]["Health"]["Status"] == "unhealthy"
    listed = [m for m in api.get(f"{api.base}/api/modems", timeout=10).json()["modems"] if m["id"] == "bad-port"]
    assert [p["code"] for p in listed[0]["problems"]] == ["cannot_open_port"]
    fh.script("remove-modem.sh", "ID=bad-port", timeout=300)

    # down and up again: the modems come back from their file, no new password
    # box, no anonymous volume left behind.
    fh.compose("--profile", "*", "down", timeout=300)
    again = fh.script("up.sh", timeout=900)
    assert "Password:" not in again.stdout
    assert anonymous_volumes(fh) == []
    assert fh.inspect("modem-worker-emu-2")["State"]["Running"]

    fh.script("remove-modem.sh", "ID=emu-1", timeout=300)
    assert "emu-1" not in fh.modems_file.read_text()
    assert "emu-1:" not in env_file_values(str(fh.env_file))["MQTT_MODEM_PASSWORDS"]
    assert fh.compose("ps", "-aq", "modem-worker-emu-1").stdout.strip() == ""
    assert anonymous_volumes(fh) == []
