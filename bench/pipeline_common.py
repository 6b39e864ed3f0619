"""Shared set-up for the pipeline benchmarks: a fresh database, the API under
gunicorn (two gevent workers), emulated modem workers, a user with an API key.
Everything runs on 127.0.0.1 and is torn down at exit."""

from __future__ import annotations

import atexit
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = ROOT / "tests" / "pipeline" / "emulated_worker.py"
PY = sys.executable

sys.path.insert(0, str(ROOT / "tests"))
from shared_fixtures import create_database, drop_database  # noqa: E402  (TEST_PG_ADMIN_URL, as the tests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


class Stack:
    def __init__(self, name: str, api_workers: int = 2):
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.procs: list[subprocess.Popen] = []
        run = f"{name}_{os.getpid()}_{secrets.token_hex(2)}"
        self.dbname = f"smsgw_bench_{run}"
        self.database_url = create_database(self.dbname)
        atexit.register(self.close)
        from smsgw_api.migrate import upgrade

        upgrade(self.database_url)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MQTT_", "POSTGRES_", "REDIS_"))}
        self.env.update(
            DATABASE_URL=self.database_url,
            MQTT_HOST="127.0.0.1",
            MQTT_PORT="1883",
            MQTT_PREFIX=f"smsgw-bench-{run}/",
            REDIS_URL=f"redis://127.0.0.1:6379/{1 + os.getpid() % 15}",
            JWT_SECRET="bench-" + secrets.token_hex(24),
            LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            PYTHONUNBUFFERED="1",
            WORKER_CLAIM_INTERVAL="1",
            WORKER_REFRESH_INTERVAL="5",
            WORKER_SWEEP_INTERVAL="5",
            SWEEP_INTERVAL_SECONDS="2",
        )
        self.engine = create_engine(self.database_url, pool_size=2)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self._spawn(
            [PY, "-m", "gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"],
            "api.log",
            dict(self.env, API_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS=str(api_workers)),
        )
        wait_until(self._api_up, 30, "the API")
        self.api_key = self._user()
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = self.api_key
        self.workers: list[dict] = []

    def _spawn(self, argv, log_name, env=None) -> subprocess.Popen:
        # The child keeps its own copy of the descriptor; ours can close at once.
        with open(self.tmp / log_name, "w") as log_file:
            proc = subprocess.Popen(argv, env=env or self.env, stdout=log_file, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def _api_up(self) -> bool:
        try:
            return requests.get(self.base + "/healthz", timeout=1).status_code < 500
        except requests.RequestException:
            return False

    def _user(self) -> str:
        from smsgw_api.core.security import new_api_key
        from smsgw_api.domain.accounts import hash_password

        key, prefix, digest = new_api_key()
        with self.engine.begin() as conn:
            uid = conn.execute(
                text("INSERT INTO users (username, password_hash, role) VALUES ('bench', :h, 'user') RETURNING id"),
                {"h": hash_password(secrets.token_hex(8))},
            ).scalar()
            conn.execute(
                text("INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES (:u, 'bench', :p, :k)"),
                {"u": uid, "p": prefix, "k": digest},
            )
        return key

    def add_workers(self, count: int, **emu_env) -> list[dict]:
        batch = []
        for _ in range(count):
            modem_id = f"bench{secrets.token_hex(3)}"
            iccid = "8999" + "".join(str(secrets.randbelow(10)) for _ in range(15))
            port = free_port()
            env = dict(
                self.env,
                MODEM_ID=modem_id,
                EMU_ICCID=iccid,
                EMU_NUMBER="+1555" + "".join(str(secrets.randbelow(10)) for _ in range(7)),
                EMU_CONTROL_PORT=str(port),
                **{k: str(v) for k, v in emu_env.items()},
            )
            self._spawn([PY, str(WORKER_SCRIPT)], f"{modem_id}.log", env)
            batch.append({"modem_id": modem_id, "iccid": iccid, "control": f"http://127.0.0.1:{port}"})
        for w in batch:
            w["sim_id"] = wait_until(lambda w=w: self._registered(w["iccid"]), 30, f"worker {w['modem_id']}")
        self.workers += batch
        return batch

    def _registered(self, iccid: str):
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT s.id FROM sim_cards s JOIN modems m ON m.id = s.modem_id WHERE s.iccid = :i AND m.online"),
                {"i": iccid},
            ).scalar()

    def sent(self, worker: dict) -> list[dict]:
        return requests.get(worker["control"] + "/sent", timeout=5).json()

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []
        try:
            self.engine.dispose()
            drop_database(self.dbname)
        except Exception as exc:
            print(f"cleanup: {exc}", file=sys.stderr)
