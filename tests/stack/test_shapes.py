"""The two shapes' files without a container engine (the stack tier runs
them: tests/stack/test_stack_edge.py): the edge node's compose file that
scripts/edge-join.py writes, and which compose files the operator scripts
use on a centre (scripts/lib-compose.sh)."""

from __future__ import annotations

import subprocess
import sys

import yaml

from .support import ROOT

JOIN = ROOT / "scripts" / "edge-join.py"


def edge_env(path, modems: int) -> dict[str, str]:
    values = {
        "NODE_NAME": "lyon-1",
        "SITE": "fr",
        "DATABASE_URL": "postgresql+psycopg2://smsgw_node_7:pw-db-secret@centre.example:5432/smsgw?sslmode=verify-full",
        "MQTT_HOST": "centre.example",
        "MQTT_PORT": "8883",
        "MQTT_CA_FILE": str(path.parent / "centre-ca.pem"),
        "MODEMS": str(modems),
    }
    for k in range(1, modems + 1):
        values[f"MODEM_{k}_ID"] = f"lyon-1-{k}"
        values[f"MODEM_{k}_MQTT_PASSWORD"] = f"pw-mqtt-secret-{k}"
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return values


def compose_only(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(JOIN), "--out", str(tmp_path / "edge.env"), "--compose-only", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_edge_compose_file_has_a_worker_per_modem_with_a_port_and_no_secret(tmp_path):
    edge_env(tmp_path / "edge.env", 3)
    done = compose_only(tmp_path, "--ports", "/dev/serial/by-id/usb-A-if00 /dev/serial/by-id/usb-B-if00")
    assert done.returncode == 0, done.stderr
    assert "modems 3..3 have no port" in done.stderr
    text = (tmp_path / "compose.edge.yml").read_text()
    assert "secret" not in text  # compose reads them from edge.env
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"modem-worker", "modem-1", "modem-2"}
    assert services["modem-worker"]["profiles"] == ["build"]
    assert services["modem-2"]["devices"] == ["/dev/serial/by-id/usb-B-if00:/dev/modem"]
    env = services["modem-1"]["environment"]
    assert env["MODEM_ID"] == env["MQTT_MODEM_WORKER_USERNAME"] == "${MODEM_1_ID}"
    assert env["MQTT_MODEM_WORKER_PASSWORD"] == "${MODEM_1_MQTT_PASSWORD}"
    assert env["MODEM_DEVICE"] == "/dev/modem" and env["NODE_NAME"] == "${NODE_NAME}"
    # The centre's certificate is mounted where DATABASE_URL and MQTT_CA_FILE name it.
    assert "${MQTT_CA_FILE}:${MQTT_CA_FILE}:ro" in services["modem-1"]["volumes"]


def test_emulated_modems_need_no_port_and_a_bad_port_or_both_are_refused(tmp_path):
    edge_env(tmp_path / "edge.env", 2)
    done = compose_only(tmp_path, "--emulator", "generic")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load((tmp_path / "compose.edge.yml").read_text())["services"]
    assert services["modem-2"]["environment"]["MODEM_EMULATOR"] == "generic"
    assert "devices" not in services["modem-2"]

    for args, error in (
        (("--ports", "/dev/ttyUSB0:/etc/shadow"), "not a device path"),
        (("--ports", "/dev/ttyUSB0", "--emulator", "generic"), "not both"),
        (("--emulator", "generic\n  privileged: true"), "not a profile name"),
    ):
        refused = compose_only(tmp_path, *args)
        assert refused.returncode == 2 and error in refused.stderr, (args, refused.stderr)


def test_without_edge_env_compose_only_says_to_join_first(tmp_path):
    done = compose_only(tmp_path, "--emulator", "generic")
    assert done.returncode == 2 and "join first" in done.stderr
    assert not (tmp_path / "compose.edge.yml").exists()


def compose_files(env_file, modems_file) -> str:
    done = subprocess.run(
        ["bash", "-c", ". scripts/lib-compose.sh && compose_files"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "SMSGW_ENV_FILE": str(env_file), "SMSGW_MODEMS_FILE": str(modems_file)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_centre_is_recorded_in_the_env_file_and_every_operator_script_adds_its_compose_file(tmp_path):
    env_file, modems = tmp_path / ".env", tmp_path / "compose.modems.yml"
    env_file.write_text("SMSGW_CENTRE=\n")
    assert compose_files(env_file, modems) == "docker-compose.yml"
    env_file.write_text("SMSGW_CENTRE=1\n")
    assert compose_files(env_file, modems) == "docker-compose.yml:compose.centre.yml"
    modems.write_text("services: {}\n")
    assert compose_files(env_file, modems) == f"docker-compose.yml:compose.centre.yml:{modems}"
