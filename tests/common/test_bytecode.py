"""smsgw_common.bytecode: a container's first start compiles the service's
imports, then starts over in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SERVICE = """
import os, sys
from smsgw_common import bytecode
open({runs!r}, "a").write(str(os.getpid()) + "\\n")
bytecode.compile_then_restart("svc", {code!r})
print("serving", "email.feedparser" in sys.modules)
"""


def start(tmp_path: Path, code: str, prefix: bool = True) -> tuple[str, list[str]]:
    """Run a stand-in service; its output, and the pid of each time it began."""
    runs = tmp_path / "runs"
    runs.unlink(missing_ok=True)
    script = tmp_path / "service.py"
    script.write_text(SERVICE.format(runs=str(runs), code=code))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")}
    if prefix:
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr, runs.read_text().split()


def test_the_first_start_compiles_the_imports_then_starts_over_in_the_same_pid(tmp_path):
    out, pids = start(tmp_path, "import email.feedparser")
    # Began twice, as one process (exec): the service itself never compiled them.
    assert len(pids) == 2 and pids[0] == pids[1]
    assert out.strip() == "serving False"
    assert "feedparser" in {p.name.split(".")[0] for p in (tmp_path / "pycache").rglob("*.pyc")}
    out, pids = start(tmp_path, "import email.feedparser")
    assert len(pids) == 1 and out.strip() == "serving False"  # later starts go straight on


def test_other_imports_are_compiled_again(tmp_path):
    assert len(start(tmp_path, "import json")[1]) == 2
    assert len(start(tmp_path, "import csv")[1]) == 2


def test_imports_that_fail_are_reported_and_the_service_goes_on_without_a_restart(tmp_path):
    out, pids = start(tmp_path, "import email.feedparser, no_such_module_here")
    assert len(pids) == 1 and "ModuleNotFoundError" in out and "serving True" in out
    assert not list((tmp_path / "pycache").glob(".compiled-*"))  # the next start tries again


def test_a_mark_that_cannot_be_written_never_makes_a_restart_loop(tmp_path):
    (tmp_path / "pycache").write_text("not a directory")  # nothing can be written under it
    out, pids = start(tmp_path, "import json")
    assert len(pids) == 1 and "cannot mark" in out


def test_without_a_cache_prefix_nothing_is_done(tmp_path):
    out, pids = start(tmp_path, "import email.feedparser", prefix=False)
    assert len(pids) == 1 and out.strip() == "serving False"
