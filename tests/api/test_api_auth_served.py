"""Login floods and idle sockets against the API as deployed: gunicorn with
two gevent workers, behind a (pretend) nginx that sets X-Forwarded-For, a
small database pool. A legitimate client's latency is measured throughout."""

from __future__ import annotations

import json
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import websocket
from support.processes import start_http_service

from .api_support import PASSWORD, count_rows, make_persona

PER_USER = 4  # LOGIN_MAX_ATTEMPTS: per username from one address
PER_ADDRESS = 20  # LOGIN_MAX_ATTEMPTS_PER_ADDRESS
HANDSHAKE = 3.0  # SOCKETIO_HANDSHAKE_SECONDS


@pytest.fixture(scope="module")
def served(service_env, python, engine, alice, tmp_path_factory):
    env = {
        **service_env,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "GUNICORN_WORKERS": "2",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "0",
        "TRUST_PROXY": "1",
        "LOGIN_MAX_ATTEMPTS": str(PER_USER),
        "LOGIN_MAX_ATTEMPTS_PER_ADDRESS": str(PER_ADDRESS),
        "SOCKETIO_HANDSHAKE_SECONDS": str(HANDSHAKE),
        # A small pool: a handler that held its connection while hashing ran it dry.
        "API_DB_POOL_SIZE": "3",
        "API_DB_MAX_OVERFLOW": "0",
        "PIPELINE_BACKGROUND": "off",
    }
    log = tmp_path_factory.mktemp("served") / "api.log"
    proc, base, _ = start_http_service([python, "-m", "smsgw_api", "serve"], env, log, timeout=60)
    try:
        yield base
    finally:
        proc.stop()


def _address() -> str:
    return f"198.51.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"


def _login(base, username, password, address):
    try:
        r = requests.post(
            f"{base}/api/auth",
            json={"username": username, "password": password},
            headers={"X-Forwarded-For": address},
            timeout=120,
        )
        return r.status_code
    except requests.RequestException as exc:
        return type(exc).__name__


class LegitimateClient:
    """GET /api/me with an API key, one request after another, while the
    flood runs: at most `limit` requests, until stopped."""

    def __init__(self, base: str, key: str, limit: int = 400):
        self.base, self.key, self.limit = base, key, limit
        self.latencies: list[float] = []
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set() and len(self.latencies) < self.limit:
            started = time.perf_counter()
            try:
                r = requests.get(f"{self.base}/api/me", headers={"X-API-Key": self.key}, timeout=30)
                self.statuses.append(r.status_code)
            except requests.RequestException as exc:
                self.statuses.append(type(exc).__name__)
            self.latencies.append(time.perf_counter() - started)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(60)

    @property
    def p99(self) -> float:
        return (
            statistics.quantiles(self.latencies, n=100, method="inclusive")[98]
            if len(self.latencies) > 1
            else self.latencies[0]
        )


def _flood(base, attempts):
    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(lambda a: _login(base, *a), attempts))


def test_a_parallel_flood_on_one_user_gets_exactly_the_limit_of_checks(served, engine, alice):
    name = f"flood-{secrets.token_hex(3)}"
    make_persona(engine, name, "user")
    address = _address()
    with LegitimateClient(served, alice.api_key) as legit:
        codes = _flood(served, [(name, "not the password", address)] * 60)
    checks = count_rows(engine, "logs", "status = 'failed' AND details LIKE :d", d=f"%{name}%")
    print(
        f"\none user, 60 parallel: {checks} checks (limit {PER_USER}), {codes.count(429)} x 429, "
        f"p99 /api/me {legit.p99:.3f}s"
    )
    assert checks == PER_USER
    assert codes.count(401) == PER_USER and codes.count(429) == 60 - PER_USER, codes
    assert set(legit.statuses) == {200}


def test_a_parallel_flood_from_one_address_gets_exactly_the_limit_of_checks_and_no_503(served, engine, alice):
    tag = secrets.token_hex(3)
    address = _address()
    owner = make_persona(engine, f"owner-{tag}", "user")
    with LegitimateClient(served, alice.api_key) as legit:
        results: dict[str, int | str] = {}
        # The owner logs in from elsewhere during the flood, and gets in.
        late = threading.Timer(0.5, lambda: results.update(owner=_login(served, owner.username, PASSWORD, _address())))
        late.start()
        codes = _flood(served, [(f"spray-{tag}-{i}", "guess guess", address) for i in range(100)])
        late.join(120)
    checks = count_rows(engine, "logs", "status = 'failed' AND details LIKE :d", d=f"%spray-{tag}-%")
    print(
        f"\none address, 100 parallel: {checks} checks (limit {PER_ADDRESS}), {codes.count(429)} x 429, "
        f"5xx {sum(1 for c in codes if isinstance(c, int) and c >= 500)}; legitimate GET /api/me: "
        f"{len(legit.latencies)} requests, p50 {statistics.median(legit.latencies):.3f}s, p99 {legit.p99:.3f}s, "
        f"max {max(legit.latencies):.3f}s"
    )
    assert checks == PER_ADDRESS
    assert codes.count(401) == PER_ADDRESS and codes.count(429) == 100 - PER_ADDRESS, codes
    assert results.get("owner") == 200
    assert set(legit.statuses) == {200}
    # Hashes run on threads, so the workers keep answering during the flood.
    assert legit.p99 < 2.0


# --- engine.io connections that never authenticate ---------------------------


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"


def _open(base: str) -> websocket.WebSocket:
    ws = websocket.create_connection(_ws_url(base), timeout=10, suppress_origin=True)
    opening = ws.recv()
    assert opening.startswith("0{"), opening
    return ws


def _seconds_until_closed(ws: websocket.WebSocket, bound: float) -> tuple[float | None, list[str]]:
    """Answer pings like a live client until the server closes the socket
    (None if it is still open after `bound` seconds)."""
    started = time.monotonic()
    frames: list[str] = []
    while time.monotonic() - started < bound:
        ws.settimeout(max(0.05, bound - (time.monotonic() - started)))
        try:
            frame = ws.recv()
        except websocket.WebSocketTimeoutException:
            return None, frames
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return time.monotonic() - started, frames
        if not frame:  # a close frame
            return time.monotonic() - started, frames
        frames.append(frame)
        if frame == "2":
            ws.send("3")
    return None, frames


def test_an_engineio_socket_that_never_authenticates_is_closed_within_the_bound(served):
    ws = _open(served)
    try:
        closed_after, _ = _seconds_until_closed(ws, HANDSHAKE + 3)
    finally:
        ws.close()
    assert closed_after is not None, "the unauthenticated socket was still open"
    assert closed_after <= HANDSHAKE + 2


def test_a_refused_connect_closes_the_socket_at_once(served):
    ws = _open(served)
    try:
        ws.send("40" + json.dumps({"token": "not.a.token"}))
        closed_after, frames = _seconds_until_closed(ws, HANDSHAKE + 3)
    finally:
        ws.close()
    assert frames and frames[0].startswith("44"), frames  # the client hears why first
    assert closed_after is not None and closed_after < HANDSHAKE / 2, closed_after


def test_an_authenticated_socket_stays_open(served, alice):
    ws = _open(served)
    try:
        ws.send("40" + json.dumps({"api_key": alice.api_key}))
        closed_after, frames = _seconds_until_closed(ws, HANDSHAKE + 1.5)
    finally:
        ws.close()
    assert closed_after is None and any(f.startswith("40{") for f in frames), frames


def test_idle_unauthenticated_sockets_do_not_stop_the_api(served, alice):
    count = 200
    sockets: list[websocket.WebSocket] = []
    try:
        with ThreadPoolExecutor(20) as pool:
            sockets = list(pool.map(lambda _: _open(served), range(count)))
        with LegitimateClient(served, alice.api_key, limit=20) as legit:
            legit._thread.join(60)
        print(f"\n{count} idle sockets: GET /api/me p99 {legit.p99:.3f}s max {max(legit.latencies):.3f}s")
        assert set(legit.statuses) == {200} and legit.p99 < 1.0
        # Every one of them is closed by the server within the bound.
        deadline = time.monotonic() + HANDSHAKE + 5
        still_open = 0
        for ws in sockets:
            closed_after, _ = _seconds_until_closed(ws, max(0.1, deadline - time.monotonic()))
            still_open += closed_after is None
        assert still_open == 0
    finally:
        for ws in sockets:
            ws.close()


def test_a_password_change_closes_the_users_sockets_at_once(served, engine):
    quinn = make_persona(engine, f"quinn-{secrets.token_hex(3)}", "user")
    r = requests.post(
        f"{served}/api/auth",
        json={"username": quinn.username, "password": PASSWORD},
        headers={"X-Forwarded-For": _address()},
        timeout=60,
    )
    token = r.json()["token"]
    ws = _open(served)
    try:
        ws.send("40" + json.dumps({"token": token}))
        ws.settimeout(10)
        frames = [ws.recv() for _ in range(2)]  # the connect ack and the broker state, in either order
        assert any(f.startswith("40{") for f in frames), frames
        r = requests.put(
            f"{served}/api/me/password",
            json={"current_password": PASSWORD, "new_password": "quinn's new password"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert r.status_code == 200
        closed_after, _ = _seconds_until_closed(ws, 5)
    finally:
        ws.close()
    # SOCKETIO_REAUTH_SECONDS is 30 by default: this is the announcement, not the periodic pass.
    assert closed_after is not None and closed_after < 3, closed_after
