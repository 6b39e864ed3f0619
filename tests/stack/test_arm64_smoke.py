"""Smoke test of the stack built for linux/arm64 (the Raspberry Pi's
architecture) and run under qemu-user: `.ci/arm64.sh` builds the images, brings
the demo profile up and selects these tests with `-m arm64`.

Deliberately short (emulation is slow): every container really runs aarch64,
an operator logs in, and an SMS goes out through an emulated modem and comes
back `delivered`. The full end-to-end suite (test_stack.py) runs on amd64.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest
import requests

from .support import message, online_sims, wait_for

pytestmark = pytest.mark.arm64

# Everything is several times slower under qemu than on a Pi or natively.
SLOW = 4
USB_DEMO_MODEMS = ("demo-1", "demo-2")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def test_every_container_runs_an_arm64_image_on_aarch64(stack):
    expected = set(stack.compose("--profile", "demo", "config", "--services").stdout.split())
    containers = docker(
        "ps",
        "--filter",
        f"label=com.docker.compose.project={stack.project}",
        "--format",
        '{{.ID}} {{.Label "com.docker.compose.service"}}',
    ).splitlines()
    running = {service: container for container, service in (line.split() for line in containers)}
    # db-setup runs once at each `up` and exits (roles, migrations, grants).
    assert set(running) == expected - {"db-setup"}, f"running: {sorted(running)}, compose file: {sorted(expected)}"
    for service, container in sorted(running.items()):
        image, restarts = docker("inspect", "-f", "{{.Image}} {{.RestartCount}}", container).split()
        assert restarts == "0", f"{service} restarted {restarts} times (out of memory under qemu?)"
        assert docker("image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", image) == "linux/arm64", service
        machine = docker("exec", container, "uname", "-m")
        print(f"{service}: uname -m = {machine}")
        assert machine == "aarch64", service


def test_an_operator_logs_in(stack, tls_cert):
    resp = requests.post(
        f"{stack.https}/api/auth",
        verify=tls_cert,
        timeout=10 * SLOW,
        json={
            "username": stack.env.get("ADMIN_USERNAME") or "admin",
            "password": stack.env["ADMIN_PASSWORD"],
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["token"]


@pytest.mark.timeout(150 * SLOW)
def test_an_sms_is_delivered_through_an_emulated_modem(stack, api):
    usb = wait_for(
        lambda: [s for s in online_sims(api) if s["modem_id"] in USB_DEMO_MODEMS],
        90 * SLOW,
        interval=2,
        what="a demo USB SIM online",
    )
    print(f"online USB SIMs: {[s['id'] for s in usb]}")
    text = f"arm64 smoke {uuid.uuid4().hex[:10]}"
    # Pinned to a USB SIM: the demo's seed board takes its share of unpinned traffic.
    resp = api.post(
        f"{api.base}/api/sms",
        json={"recipient": "+4915112345678", "message": text, "sim_card_id": usb[0]["id"]},
        timeout=10 * SLOW,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    done = wait_for(
        lambda: message(api, body["message_id"])["status"] == "delivered" and message(api, body["message_id"]),
        60 * SLOW,
        interval=1,
        what="delivery report",
    )
    print(f"message {body['message_id']} via {body['modem_id']}: {done['status']}")
    assert done["recipient"] == "+4915112345678"
    sent = stack.emulator(f"modem-worker-{body['modem_id']}", "GET", "/sent")
    assert any(s["text"] == text and s["number"] == "+4915112345678" for s in sent)
