"""scripts/check-services.sh, which make test runs first: it names what is
missing and how to get it, and stays quiet when everything is there."""

import socket
import subprocess

from shared_fixtures import ROOT

SCRIPT = str(ROOT / "scripts/check-services.sh")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def check(**env) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)


def test_it_passes_quietly_when_the_services_listen():
    result = check()
    assert (result.returncode, result.stderr) == (0, "")


def test_it_names_a_missing_service_and_the_debian_package_that_brings_it():
    port = closed_port()
    result = check(TEST_REDIS_URL=f"redis://127.0.0.1:{port}", TEST_MQTT_PORT=str(port))
    assert result.returncode == 1
    assert f"Redis is not listening on 127.0.0.1:{port}." in result.stderr
    assert "sudo apt-get install redis-server" in result.stderr
    assert f"Mosquitto is not listening on 127.0.0.1:{port}" in result.stderr
    assert "sudo apt-get install mosquitto" in result.stderr
    assert "Postgres" not in result.stderr


def test_it_says_why_postgres_does_not_let_the_tests_in():
    result = check(TEST_PG_ADMIN_URL="postgresql://postgres@127.0.0.1:5432/no_such_database_here")
    assert result.returncode == 1
    assert "no_such_database_here" in result.stderr
    assert "sudo -u postgres createdb test" in result.stderr
