"""What the long-running processes load, checked in a fresh interpreter.

Every module a process imports stays resident for its lifetime; on a Pi each
modem has a worker of its own (bench/README.md, "Modem worker"). pydantic
with the shared payload models cost a worker 8 MB, so the shared schemas are
plain dataclasses and neither the USB modem worker nor the stats collector
may load pydantic; the collector also keeps SQLAlchemy out (its 30 MB budget).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

WORKER = ["smsgw_worker.__main__", "smsgw_worker.worker", "smsgw_common.schemas", "smsgw_common.selfstats"]
COLLECTOR = ["smsgw_stats.__main__", "smsgw_stats.components", "smsgw_stats.service", "smsgw_common.schemas"]


def loaded(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [(WORKER, {"pydantic", "pydantic_core"}), (COLLECTOR, {"pydantic", "pydantic_core", "sqlalchemy"})],
    ids=["modem-worker", "stats-collector"],
)
def test_a_long_running_process_does_not_load_what_it_has_no_use_for(modules, forbidden):
    top_level = loaded(modules)
    assert top_level & forbidden == set()
    assert modules[0].split(".")[0] in top_level  # the import really ran
