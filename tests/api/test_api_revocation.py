"""Revocation reaches every process at once, although each caches who a key
or token belongs to (core/security.py AuthCache, core/revocations.py): with
a second app in this process, with Redis gone and back (a private
redis-server of this test), and with two API processes served by gunicorn.

Every test first makes sure the other process really trusts its cache for
the credential (otherwise a refusal would prove nothing), then revokes."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time

import pytest
import requests
from sqlalchemy import text
from support.processes import start_http_service
from support.waits import wait_until

from .api_support import PASSWORD, api_env, cached_in, close_app, make_persona, new_app, trusts_cache

REDIS_PORT = 25811  # this engineer's range; a private Redis that the test may kill


@pytest.fixture
def another_process(env):
    """A second app on the same database and Redis, with its own auth cache."""
    app = new_app(env)
    yield app
    close_app(app)


def test_a_key_revoked_in_one_process_is_refused_by_another_at_once(client, engine, another_process):
    rita = make_persona(engine, "rita-revoked", "user")
    other = another_process.test_client()
    for round_ in range(15):
        made = client.post("/api/api-keys", json={"name": f"round {round_}"}, headers=rita.headers).get_json()
        key = {"X-API-Key": made["api_key"]}
        cached_in(another_process, key)
        assert client.delete(f"/api/api-keys/{made['id']}", headers=rita.headers).status_code == 200
        assert other.get("/api/me", headers=key).status_code == 401, f"round {round_}"


def test_a_password_change_in_one_process_ends_the_sessions_another_cached(client, engine, another_process):
    make_persona(engine, "paula-password", "user")
    password = PASSWORD
    for round_ in range(5):
        token = client.post("/api/auth", json={"username": "paula-password", "password": password}).get_json()["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        cached_in(another_process, bearer)
        new = f"{PASSWORD} {round_}"
        changed = client.put(
            "/api/me/password", json={"current_password": password, "new_password": new}, headers=bearer
        )
        assert changed.status_code == 200, changed.get_json()
        password = new
        assert another_process.test_client().get("/api/me", headers=bearer).status_code == 401, f"round {round_}"


def test_without_redis_nothing_is_cached_and_a_revocation_in_postgres_counts_at_once(database_url, mqtt_prefix, engine):
    app = new_app(api_env(database_url, "redis://127.0.0.1:1/0", mqtt_prefix))
    try:
        vic = make_persona(engine, "vic-no-redis", "user")
        client = app.test_client()
        for _ in range(3):
            assert client.get("/api/me", headers=vic.headers).status_code == 200
        assert not trusts_cache(app, vic.headers)
        with engine.begin() as conn:
            conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE user_id = :id"), {"id": vic.id})
        assert client.get("/api/me", headers=vic.headers).status_code == 401
    finally:
        close_app(app)


class PrivateRedis:
    """A redis-server of this test's own, on REDIS_PORT, that it can kill and start again."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{REDIS_PORT}/0"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_until(client.ping, 10, 0.05, "the private redis-server to answer", ignore=(redis.RedisError,))
        client.close()

    def kill(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is needed (Debian's redis-server package)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def test_a_redis_restart_never_lets_a_process_trust_what_it_cached_before(
    database_url, mqtt_prefix, engine, private_redis
):
    env = api_env(database_url, private_redis.url, mqtt_prefix)
    first, second = new_app(env), new_app(env)
    try:
        rosa = make_persona(engine, "rosa-restart", "user")
        a = first.test_client()

        def new_key(name):
            made = a.post("/api/api-keys", json={"name": name}, headers=rosa.headers).get_json()
            return made["id"], {"X-API-Key": made["api_key"]}

        # Redis killed: the feed is lost, so nothing is trusted from the cache
        # and a revocation that nobody could announce still counts at once.
        gone_id, gone = new_key("revoked while Redis is down")
        missed_id, missed = new_key("revoked before the other process resubscribes")
        cached_in(second, gone)
        cached_in(second, missed)
        private_redis.kill()
        assert a.delete(f"/api/api-keys/{gone_id}", headers=rosa.headers).status_code == 200
        assert second.test_client().get("/api/me", headers=gone).status_code == 401

        # Redis back (empty): a revocation published before the other process
        # has subscribed again is not heard there, and must not matter.
        private_redis.start()
        assert a.delete(f"/api/api-keys/{missed_id}", headers=rosa.headers).status_code == 200
        assert second.test_client().get("/api/me", headers=missed).status_code == 401

        # Subscribed again: caching works, and so does revocation.
        key_id, key = new_key("after the restart")
        cached_in(second, key)
        assert a.delete(f"/api/api-keys/{key_id}", headers=rosa.headers).status_code == 200
        assert second.test_client().get("/api/me", headers=key).status_code == 401
    finally:
        close_app(first)
        close_app(second)


def test_two_gunicorn_processes_refuse_a_key_revoked_in_the_other_at_once(service_env, python, engine, tmp_path):
    env = {
        **service_env,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "GUNICORN_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "0",
        "PIPELINE_BACKGROUND": "off",
    }
    cmd = [python, "-m", "smsgw_api", "serve"]
    a_proc, a, _ = start_http_service(cmd, env, tmp_path / "a.log", timeout=90)
    try:
        b_proc, b, _ = start_http_service(cmd, env, tmp_path / "b.log", timeout=90)
        try:
            rudi = make_persona(engine, "rudi-two-processes", "user")
            for round_ in range(10):
                made = requests.post(
                    f"{a}/api/api-keys", json={"name": f"r{round_}"}, headers=rudi.headers, timeout=10
                ).json()
                key = {"X-API-Key": made["api_key"]}
                # Enough requests that B answers from its cache (its feed
                # subscribes on first use, within milliseconds).
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    assert requests.get(f"{b}/api/me", headers=key, timeout=10).status_code == 200
                assert requests.delete(f"{a}/api/api-keys/{made['id']}", headers=rudi.headers, timeout=10).ok
                assert requests.get(f"{b}/api/me", headers=key, timeout=10).status_code == 401, f"round {round_}"
        finally:
            b_proc.stop()
    finally:
        a_proc.stop()


def test_an_expired_entry_is_looked_up_again_by_one_request_while_the_others_keep_it():
    from smsgw_api.core.security import AuthCache, Principal

    cache = AuthCache(ttl=0.2)
    rita = Principal(1, "rita", "user")
    cache.put("k", rita, 7)
    assert cache.get("k", 7) is rita
    assert cache.get("k", 8) is None  # a change was announced: never trusted again
    time.sleep(0.25)
    assert cache.get("k", 7) is None  # the first request after the ttl looks it up
    assert cache.get("k", 7) is rita  # the others meanwhile keep the answer
    time.sleep(0.25)
    assert cache.get("k", 7) is None  # a lookup that never came back is not waited for beyond one ttl
    cache.forget("k")  # the lookup found no such caller
    assert cache.get("k", 7) is None
    assert cache.get("k", 7) is None


def test_a_key_revoked_behind_the_apis_back_is_refused_once_the_cache_ttl_has_passed(
    database_url, redis_url, mqtt_prefix, engine
):
    app = new_app(api_env(database_url, redis_url, mqtt_prefix, AUTH_CACHE_SECONDS="0.5"))
    try:
        sam = make_persona(engine, "sam-silent-revoke", "user")
        cached_in(app, sam.headers)
        with engine.begin() as conn:  # no announcement: the ttl is the only bound
            conn.execute(text("UPDATE api_keys SET revoked_at = now() WHERE user_id = :id"), {"id": sam.id})
        time.sleep(0.6)
        client = app.test_client()
        assert client.get("/api/me", headers=sam.headers).status_code == 401
        assert client.get("/api/me", headers=sam.headers).status_code == 401
    finally:
        close_app(app)


def test_a_request_sees_a_revocation_that_the_listener_has_not_read_yet(client, engine, env, monkeypatch):
    """The listener may not have run yet when the next request comes (a busy
    gevent hub): the request itself must read what is waiting on the socket."""
    import threading
    from types import SimpleNamespace

    from smsgw_api.core import revocations

    stalled = threading.Event()

    def never_wakes(*args):
        stalled.wait(30)
        return [], [], []

    monkeypatch.setattr(revocations, "select", SimpleNamespace(select=never_wakes))
    app = new_app(env)
    try:
        tess = make_persona(engine, "tess-stalled-listener", "user")
        made = client.post("/api/api-keys", json={"name": "stalled"}, headers=tess.headers).get_json()
        key = {"X-API-Key": made["api_key"]}
        cached_in(app, key)
        assert client.delete(f"/api/api-keys/{made['id']}", headers=tess.headers).status_code == 200
        time.sleep(0.2)  # the message is in the socket's buffer by now, unread
        assert app.test_client().get("/api/me", headers=key).status_code == 401
    finally:
        stalled.set()
        close_app(app)


def test_with_a_tls_redis_url_the_feed_never_vouches_so_nothing_is_cached(caplog):
    from smsgw_api.core.revocations import RevocationFeed

    feed = RevocationFeed(f"rediss://127.0.0.1:{REDIS_PORT}/0", "test:auth:changes")
    try:
        wait_until(lambda: "not supported" in caplog.text, 10, 0.05, "the feed to say it cannot subscribe")
        assert feed.current() is None
    finally:
        feed.stop()
