"""The chaos tier: every component killed under load, every acknowledged
message reconciled against what the emulated modems really transmitted.

Run alone: `pytest -m chaos tests/chaos` (`.ci/chaos.sh` in CI, which also
starts the container engine and builds the images). Its tests are marked
`chaos` and deselected from any other run, as tests/fuzz and tests/stack are.

What runs where:
- containers.py  the tier's own Postgres, Redis, Mosquitto (testcontainers, local images only)
- gateway.py     the API, workers and emulators as native processes
- client.py      the sending client (unique texts, Idempotency-Keys, bounded retries)
- ledger.py      what the modems transmitted (files the emulators append to)
- verdict.py     the reconciliation and the table printed at the end of the session
- scenario.py    one scenario's life; test_chaos.py the scenarios themselves

Ports: CHAOS_PORT_BASE (default 25700) and the next 30.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No reaper container: it would have to come from a registry. The fixtures
# below remove their containers, and `remove_leftovers` those of a killed run.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"

from .containers import MOSQUITTO_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE, Mosquitto, Postgres, Redis, remove_leftovers
from .scenario import Scenario, Services
from .verdict import Row, table

PORT_BASE = int(os.environ.get("CHAOS_PORT_BASE", "25700"))
ROWS: list[Row] = []


def pytest_collection_modifyitems(config, items):
    if "chaos" in (config.getoption("markexpr") or ""):
        return
    here = Path(__file__).parent
    mine = [i for i in items if Path(str(i.fspath)).is_relative_to(here) and i.get_closest_marker("chaos")]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not ROWS:
        return
    text = table(ROWS)
    terminalreporter.write_sep("=", "chaos verdicts (issue 12)")
    terminalreporter.write_line(text)
    out = os.environ.get("CHAOS_TABLE")
    if out:
        Path(out).write_text(text + "\n")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chaos")


@pytest.fixture(scope="session")
def services(run_id):
    import docker

    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        raise RuntimeError(f"the chaos tier needs a container engine (CI: .ci/chaos.sh starts one): {exc}") from exc
    remove_leftovers(client)
    made = Services(
        Postgres("postgres", POSTGRES_IMAGE, PORT_BASE, 5432, run_id=run_id),
        Redis("redis", REDIS_IMAGE, PORT_BASE + 1, 6379, run_id=run_id),
        Mosquitto("mosquitto", MOSQUITTO_IMAGE, PORT_BASE + 2, 1883, run_id=run_id),
    )
    try:
        for s in made.all():
            s.start(client)
        for s in made.all():
            s.ready()
        yield made
    finally:
        for s in made.all():
            s.remove()
        client.close()


@pytest.fixture
def scenario(services, run_dir, request):
    """A factory: scenario("name") starts a fresh gateway on healthy services."""
    started: list[Scenario] = []

    def make(name: str) -> Scenario:
        # A scenario that failed half-way may have left a service down.
        for s in services.all():
            s.ensure_running()
        for s in services.all():
            s.ready()
        d = run_dir / name
        d.mkdir(exist_ok=True)
        sc = Scenario(name, services, d, PORT_BASE + 10, [PORT_BASE + 20, PORT_BASE + 21], ROWS)
        started.append(sc)
        return sc.start()

    yield make
    for sc in started:
        sc.stop()
