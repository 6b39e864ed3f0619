"""Driving the running compose stack from the tests: the docker CLI for
containers, requests through nginx for the API."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]


def env_file_values(path: str) -> dict[str, str]:
    values = {}
    for line in Path(path).read_text().splitlines():
        if line and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


class Stack:
    """The running compose project, driven through the docker CLI."""

    def __init__(self, project: str, env_file: str, https_port: int, http_port: int):
        self.project = project
        self.env_file = env_file
        self.env = env_file_values(env_file)
        self.https = f"https://127.0.0.1:{https_port}"
        self.http = f"http://127.0.0.1:{http_port}"

    def compose(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None):
        cmd = ["docker", "compose", "-p", self.project, "--env-file", self.env_file, *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=check, timeout=timeout, input=input)

    def exec(self, service: str, *cmd: str, check: bool = True, timeout: float = 60):
        return self.compose("exec", "-T", service, *cmd, check=check, timeout=timeout)

    def container(self, service: str) -> str:
        out = self.compose("ps", "-q", service).stdout.split()
        assert out, f"no container for service {service}"
        return out[0]

    def inspect(self, service: str) -> dict:
        out = subprocess.run(
            ["docker", "inspect", self.container(service)], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        return json.loads(out)[0]

    def crash(self, service: str) -> int:
        """SIGKILL the container's init process from the host: a crash, not a
        `docker stop`, so the restart policy applies. Returns the restart count before."""
        state = self.inspect(service)
        os.kill(state["State"]["Pid"], 9)
        return state["RestartCount"]

    def wait_restarted_healthy(self, service: str, restarts_before: int, timeout: float = 120) -> None:
        def restarted_healthy():
            state = self.inspect(service)
            health = state["State"].get("Health", {}).get("Status")
            if state["RestartCount"] > restarts_before and state["State"]["Running"] and health == "healthy":
                return True
            return {"RestartCount": state["RestartCount"], **state["State"]}

        wait_until(
            lambda: restarted_healthy() is True,
            timeout,
            1,
            lambda: f"{service} to be restarted and healthy (now: {restarted_healthy()})",
        )

    def emulator(self, service: str, method: str, path: str, body: dict | None = None):
        """Call a demo modem's emulator control server inside its container."""
        script = (
            "import json, sys, urllib.request\n"
            "body = sys.stdin.read()\n"
            f"req = urllib.request.Request('http://127.0.0.1:7101{path}', method={method!r},"
            " data=body.encode() if body else None, headers={'Content-Type': 'application/json'})\n"
            "print(urllib.request.urlopen(req, timeout=10).read().decode())\n"
        )
        out = self.compose(
            "exec", "-T", service, "python", "-c", script, input=json.dumps(body) if body is not None else ""
        ).stdout
        return json.loads(out)


def wait_for(fn, timeout: float, interval: float = 0.5, what: str = "condition"):
    """support.waits.wait_until, at the stack's pace."""
    return wait_until(fn, timeout, interval, what)


def online_sims(api) -> list[dict]:
    resp = api.get(f"{api.base}/api/sim-cards", timeout=10)
    assert resp.status_code == 200, resp.text
    return [s for s in resp.json()["sim_cards"] if s["online"]]


def message(api, message_id: int) -> dict:
    resp = api.get(f"{api.base}/api/sms/{message_id}", timeout=10)
    assert resp.status_code == 200, f"message {message_id}: {resp.status_code} {resp.text}"
    return resp.json()["message"]
