"""scripts/setup-secrets.sh: strong secrets into .env, never overwriting one,
the admin login printed only when it is generated. Needs no container engine."""

from __future__ import annotations

import stat
import subprocess

import pytest

from .support import ROOT, env_file_values

SCRIPT = ROOT / "scripts" / "setup-secrets.sh"
SECRETS = (
    "POSTGRES_PASSWORD",
    "POSTGRES_OWNER_PASSWORD",
    "POSTGRES_API_PASSWORD",
    "POSTGRES_WORKER_PASSWORD",
    "POSTGRES_COLLECTOR_PASSWORD",
    "REDIS_PASSWORD",
    "JWT_SECRET",
    "ADMIN_PASSWORD",
    "MQTT_API_PASSWORD",
    "MQTT_STATS_COLLECTOR_PASSWORD",
    # one broker user per modem of docker-compose.yml (the demo ones here)
    "MQTT_MODEM_DEMO_1_PASSWORD",
    "MQTT_MODEM_DEMO_2_PASSWORD",
    "MQTT_MODEM_BOARD_15550001000_PASSWORD",
    # the demo's emulated seed board (docs/boards.md)
    "MQTT_DEMO_BOARD_PASSWORD",
)


def run(env_file) -> subprocess.CompletedProcess:
    result = subprocess.run([str(SCRIPT), str(env_file)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result


def test_it_creates_the_env_file_from_the_example_with_every_secret_filled(tmp_path):
    env_file = tmp_path / ".env"
    run(env_file)
    values = env_file_values(str(env_file))
    for name in SECRETS:
        assert len(values[name]) >= 20, name
    assert len({values[name] for name in SECRETS}) == len(SECRETS)
    assert len(values["JWT_SECRET"]) >= 32  # the API refuses shorter ones
    # The documented tunables came along, comments included.
    assert "GUNICORN_WORKERS" in values
    assert "# Signs the API's login tokens" in env_file.read_text()


def test_it_gives_the_broker_every_modems_password_and_keeps_it_in_step(tmp_path):
    env_file = tmp_path / ".env"
    run(env_file)
    values = env_file_values(str(env_file))
    pairs = dict(p.split(":", 1) for p in values["MQTT_MODEM_PASSWORDS"].strip('"').split())
    assert pairs == {
        "demo-1": values["MQTT_MODEM_DEMO_1_PASSWORD"],
        "demo-2": values["MQTT_MODEM_DEMO_2_PASSWORD"],
        "board-15550001000": values["MQTT_MODEM_BOARD_15550001000_PASSWORD"],
    }
    # A modem password changed by hand reaches the broker's list on the next run.
    lines = [
        (
            "MQTT_MODEM_DEMO_2_PASSWORD=my-own-modem-password-0123456789"
            if line.startswith("MQTT_MODEM_DEMO_2_PASSWORD=")
            else line
        )
        for line in env_file.read_text().splitlines()
    ]
    env_file.write_text("\n".join(lines) + "\n")
    run(env_file)
    values = env_file_values(str(env_file))
    pairs = dict(p.split(":", 1) for p in values["MQTT_MODEM_PASSWORDS"].strip('"').split())
    assert pairs["demo-2"] == "my-own-modem-password-0123456789"
    assert env_file.read_text().count("MQTT_MODEM_PASSWORDS=") == 1


def test_it_keeps_the_env_file_private(tmp_path):
    env_file = tmp_path / ".env"
    run(env_file)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_it_prints_the_admin_login_only_when_it_generates_the_password(tmp_path):
    env_file = tmp_path / ".env"
    first = run(env_file)
    password = env_file_values(str(env_file))["ADMIN_PASSWORD"]
    assert password in first.stdout
    second = run(env_file)
    assert password not in second.stdout
    assert "nothing changed" in second.stdout


def test_it_never_overwrites_a_secret_that_is_set(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("JWT_SECRET=my-own-secret-that-is-long-enough-to-keep-0123\nPOSTGRES_PASSWORD=\n")
    result = run(env_file)
    values = env_file_values(str(env_file))
    assert values["JWT_SECRET"] == "my-own-secret-that-is-long-enough-to-keep-0123"
    assert values["POSTGRES_PASSWORD"]  # the empty one was filled in place
    assert env_file.read_text().count("POSTGRES_PASSWORD=") == 1
    assert "JWT_SECRET" not in result.stdout.split("generated", 1)[1].splitlines()[0]
    before = env_file.read_text()
    run(env_file)
    assert env_file.read_text() == before


@pytest.mark.stack
def test_compose_refuses_to_start_without_a_secret(stack, tmp_path):
    env_file = tmp_path / ".env"
    run(env_file)
    text = "\n".join(line for line in env_file.read_text().splitlines() if not line.startswith("JWT_SECRET="))
    env_file.write_text(text + "\n")
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "JWT_SECRET is not set" in result.stderr
