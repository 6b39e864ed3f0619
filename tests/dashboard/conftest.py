"""The dashboard in a real browser: Debian's Chromium (Playwright) against the
project's nginx config (Debian's nginx) in front of the real API, with Postgres,
Redis and Mosquitto from the shared fixtures.

Personas: Alice is the admin, Bob a user who sends, Vera a viewer.
"""

from __future__ import annotations

import secrets
import sys

import pytest
from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
from support.api import SessionApi
from support.browser import PageProbe, open_page
from support.processes import start_http_service
from support.workers import WorkerThread

from .support import CHROMIUM, CHROMIUM_ARGS, MODEM_ID, PASSWORDS, ROOT, SIM_NUMBER, wait_for

sys.path.insert(0, str(ROOT / "services" / "dashboard"))
from devserver import NginxProcess, free_port

__all__ = ["Api", "PageProbe"]

Api = SessionApi


@pytest.fixture(scope="package")
def api_env(service_env):
    env = dict(service_env)
    env.update(
        JWT_SECRET=secrets.token_urlsafe(48),
        ADMIN_USERNAME="alice",
        ADMIN_PASSWORD=PASSWORDS["alice"],
        PIPELINE_BACKGROUND="on",
        TRUST_PROXY="1",
        LOGIN_MAX_ATTEMPTS="1000",
        LOG_LEVEL="WARNING",
        WEBHOOK_ALLOW_LOOPBACK="1",  # the test's receiver listens on 127.0.0.1
    )
    return env


@pytest.fixture(scope="package")
def api_server(api_env, python, tmp_path_factory):
    """How services/api/README.md says to run the API: `python -m smsgw_api serve`
    (gunicorn with the gevent worker underneath)."""
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    service, base, port = start_http_service(
        [python, "-m", "smsgw_api", "serve"],
        dict(api_env, GUNICORN_WORKERS="1", LOG_JSON="false"),
        log_path,
        timeout=40,
        cwd=ROOT,
    )
    try:
        yield {"base": base, "port": port, "log": log_path}
    finally:
        service.stop(grace=15)


@pytest.fixture(scope="package")
def nginx(api_server, tmp_path_factory):
    n = NginxProcess(f"127.0.0.1:{api_server['port']}", workdir=tmp_path_factory.mktemp("nginx"))
    n.start()
    yield n
    n.stop()


@pytest.fixture(scope="package")
def alice_api(nginx):
    a = SessionApi(nginx.url)
    a.login("alice", PASSWORDS["alice"])
    return a


@pytest.fixture(scope="package")
def personas(alice_api):
    for name, role in (("bob", "user"), ("vera", "viewer")):
        r = alice_api.post("/api/users", json={"username": name, "password": PASSWORDS[name], "role": role})
        assert r.status_code in (201, 409), r.text
    return PASSWORDS


@pytest.fixture(scope="package")
def playwright_instance():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright_instance):
    b = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def page(browser, request, nginx):
    yield from open_page(browser, request, nginx.url)


@pytest.fixture(scope="package")
def static_nginx(tmp_path_factory):
    """The same config with an upstream that refuses connections: for what
    needs no API (headers, the segment counter, the API-down message)."""
    dead = free_port()  # nothing listens there
    n = NginxProcess(f"127.0.0.1:{dead}", workdir=tmp_path_factory.mktemp("nginx-static"))
    n.start()
    yield n
    n.stop()


@pytest.fixture
def static_page(browser, request, static_nginx):
    yield from open_page(browser, request, static_nginx.url)


@pytest.fixture(scope="package")
def modem(api_env, nginx, alice_api):
    """The real modem worker driving the project's emulator, in this process,
    so a test can make an SMS arrive from the network (emulator.inject_sms)."""
    from smsgw_worker.emulator import Emulator
    from smsgw_worker.settings import WorkerSettings

    # A report delay long enough to see "sent" before "delivered".
    emulator = Emulator("generic", own_number=SIM_NUMBER, report_delay=1.5).start()
    env = dict(api_env, MODEM_ID=MODEM_ID, MODEM_EMULATOR="generic", WORKER_CLAIM_INTERVAL="1")
    running = WorkerThread(WorkerSettings.from_env(env), emulator.device, "dashboard-test-worker")
    try:
        worker = running.start(30)

        def sim_online():
            sims = alice_api.get("/api/sim-cards").json()["sim_cards"]
            return next((s for s in sims if s["number"] == SIM_NUMBER and s.get("online")), None)

        sim = wait_for(sim_online, 30, 0.3, "the emulated modem's SIM to come online")
        yield {"emulator": emulator, "worker": worker, "sim": sim, "modem_id": MODEM_ID}
    finally:
        running.stop()
        emulator.stop()
