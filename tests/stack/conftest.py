"""Fixtures for the end-to-end tests of the running Docker Compose stack.

`.ci/stack.sh` brings the stack up (`--profile demo`) and runs these tests with
SMSGW_STACK_PROJECT, SMSGW_STACK_ENV_FILE and SMSGW_STACK_HTTPS_PORT /
SMSGW_STACK_HTTP_PORT set; `.ci/arm64.sh` runs the ones marked `arm64` the same
way against the stack built for linux/arm64. Without a running stack the tests
marked `stack` or `arm64` are deselected (not skipped): `make test` does not
start a container engine.
The unmarked ones (setup-secrets.sh) need no engine and always run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)

from .support import Stack

PROJECT = os.environ.get("SMSGW_STACK_PROJECT")


def pytest_collection_modifyitems(config, items):
    if PROJECT:
        return
    here = Path(__file__).parent
    mine = [
        i
        for i in items
        if Path(str(i.fspath)).is_relative_to(here) and (i.get_closest_marker("stack") or i.get_closest_marker("arm64"))
    ]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]


@pytest.fixture(scope="package")
def stack() -> Stack:
    return Stack(
        PROJECT,
        os.environ["SMSGW_STACK_ENV_FILE"],
        int(os.environ["SMSGW_STACK_HTTPS_PORT"]),
        int(os.environ["SMSGW_STACK_HTTP_PORT"]),
    )


@pytest.fixture(scope="package")
def tls_cert(stack, tmp_path_factory) -> str:
    """The certificate nginx generated on first start, to verify TLS against it."""
    path = tmp_path_factory.mktemp("tls") / "cert.pem"
    pem = stack.exec("dashboard", "cat", "/etc/nginx/tls/cert.pem").stdout
    path.write_text(pem)
    return str(path)


@pytest.fixture(scope="package")
def api(stack, tls_cert):
    """A requests session logged in as the admin that setup-secrets.sh created."""
    session = requests.Session()
    # Not the machine's CA bundle or proxy settings from the environment:
    # only the stack's own certificate, only 127.0.0.1.
    session.trust_env = False
    session.verify = tls_cert
    resp = session.post(
        f"{stack.https}/api/auth",
        timeout=30,
        json={
            "username": stack.env.get("ADMIN_USERNAME") or "admin",
            "password": stack.env["ADMIN_PASSWORD"],
        },
    )
    assert resp.status_code == 200, resp.text
    session.headers["Authorization"] = f"Bearer {resp.json()['token']}"
    session.base = stack.https
    return session
