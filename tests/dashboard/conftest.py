"""The dashboard in a real browser: Debian's Chromium (Playwright) against the
project's nginx config (Debian's nginx) in front of the real API, with Postgres,
Redis and Mosquitto from the shared fixtures.

Personas: Alice is the admin, Bob a user who sends, Vera a viewer.
"""
from __future__ import annotations

from shared_fixtures import database_url, mqtt_prefix, package_id, redis_url, service_env  # noqa: F401  (one set per tier)
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "services" / "dashboard"))
from devserver import NginxProcess, free_port  # noqa: E402

from .support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, MODEM_ID, PASSWORDS, SIM_NUMBER, wait_for  # noqa: E402


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


def _api_command(python: str, port: int) -> list[str]:
    """How services/api/README.md says to run the API: `python -m smsgw_api serve`
    (gunicorn with the gevent worker underneath)."""
    return [python, "-m", "smsgw_api", "serve"]


@pytest.fixture(scope="package")
def api_server(api_env, python, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    log = open(log_path, "wb")
    env = dict(api_env, API_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1", LOG_JSON="false")
    proc = subprocess.Popen(_api_command(python, port), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"API exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        return requests.get(base + "/healthz", timeout=2).status_code == 200

    try:
        try:
            wait_for(ready, 40, 0.2, "the API to answer /healthz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text(errors='replace')[-3000:]}") from None
        yield {"base": base, "port": port, "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="package")
def nginx(api_server, tmp_path_factory):
    n = NginxProcess(f"127.0.0.1:{api_server['port']}", workdir=tmp_path_factory.mktemp("nginx"))
    n.start()
    yield n
    n.stop()


class Api:
    """A requests session through nginx, as one persona."""

    def __init__(self, base: str):
        self.base = base
        self.s = requests.Session()

    def login(self, username: str, password: str) -> dict:
        r = self.s.post(self.base + "/api/auth", json={"username": username, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        self.s.headers["Authorization"] = f"Bearer {body['token']}"
        return body

    def __getattr__(self, method):
        def call(path, **kw):
            kw.setdefault("timeout", 15)
            return self.s.request(method.upper(), self.base + path, **kw)
        return call


@pytest.fixture(scope="package")
def alice_api(nginx):
    a = Api(nginx.url)
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


class PageProbe:
    """What the page did besides what the test looks at: dialogs (an XSS
    payload that ran would open one), console errors, CSP violations."""

    def __init__(self, page):
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


def _open_page(browser, request, base_url):
    """A fresh browser context on base_url; a screenshot of the end state is
    kept under test-artifacts/ whatever the outcome."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=base_url)
    context.set_default_timeout(10000)
    pg = context.new_page()
    pg.probe = PageProbe(pg)
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        context.close()


@pytest.fixture
def page(browser, request, nginx):
    yield from _open_page(browser, request, nginx.url)


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
    yield from _open_page(browser, request, static_nginx.url)


@pytest.fixture(scope="package")
def modem(api_env, nginx, alice_api):
    """The real modem worker driving the project's emulator, in this process,
    so a test can make an SMS arrive from the network (emulator.inject_sms)."""
    import threading

    from smsgw_worker.emulator import Emulator
    from smsgw_worker.settings import WorkerSettings
    from smsgw_worker.worker import Worker

    # A report delay long enough to see "sent" before "delivered".
    emulator = Emulator("generic", own_number=SIM_NUMBER, report_delay=1.5).start()
    env = dict(api_env, MODEM_ID=MODEM_ID, MODEM_EMULATOR="generic", WORKER_CLAIM_INTERVAL="1")
    worker = Worker(WorkerSettings.from_env(env), device=emulator.device)
    thread = threading.Thread(target=worker.run, name="dashboard-test-worker", daemon=True)
    thread.start()
    try:
        def sim_online():
            sims = alice_api.get("/api/sim-cards").json()["sim_cards"]
            return next((s for s in sims if s["number"] == SIM_NUMBER and s.get("online")), None)

        sim = wait_for(sim_online, 30, 0.3, "the emulated modem's SIM to come online")
        yield {"emulator": emulator, "worker": worker, "sim": sim, "modem_id": MODEM_ID}
    finally:
        worker.stop()
        thread.join(timeout=15)
        emulator.stop()
