#!/usr/bin/env python3
"""The dependency locks under requirements/, one per image plus the test venv.

    scripts/lock.py          regenerate them (`make lock`; needs uv in .venv)
    scripts/lock.py --check  fail if a pyproject or requirements-dev.txt asks
                             for something its lock does not pin (offline)

A lock's inputs are the dependencies and build requirements of the pyproject
files listed below (our own smsgw-* packages left out: they are installed
from the tree with --no-deps). Resolution is universal with every file's hash,
so one lock serves the amd64 and the arm64 images alike. Re-running keeps the
current pins where they still satisfy the inputs; to move a pin, edit the
bound or run `scripts/lock.py --upgrade-package NAME`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"  # the images' python:3.11-slim-bookworm
COMMON = "common/pyproject.toml"
API = "services/api/pyproject.toml"
WORKER = "services/modem-worker/pyproject.toml"
STATS = "services/stats-collector/pyproject.toml"

# The dev lock comes first: the service locks are constrained by it, so the
# tests run the versions the images ship.
LOCKS: dict[str, tuple[list[str], list[str]]] = {
    "dev": ([COMMON, API, WORKER, STATS], ["requirements-dev.txt"]),
    "api": ([COMMON, API], []),
    "modem-worker": ([COMMON, WORKER], []),
    # The collector's image leaves out smsgw_common's SQLAlchemy (it imports
    # only the light modules): its own dependencies only.
    "stats-collector": ([STATS], []),
}

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def inputs(pyprojects: list[str], req_files: list[str]) -> list[str]:
    reqs: list[str] = []
    for name in pyprojects:
        data = tomllib.loads((ROOT / name).read_text())
        reqs += data["build-system"]["requires"]
        reqs += data["project"]["dependencies"]
    for name in req_files:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                reqs.append(line)
    out: list[str] = []
    for req in reqs:
        if not req.lower().startswith("smsgw-") and req not in out:
            out.append(req)
    return out


def pins(path: Path) -> tuple[dict[str, str], list[str]]:
    """name -> version, and the names of pins that carry no hash."""
    found: dict[str, str] = {}
    unhashed: list[str] = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = PIN.match(line)
        if not m:
            continue
        name = canonical(m.group(1))
        found[name] = m.group(2)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if "--hash=sha256:" not in line and "--hash=sha256:" not in following:
            unhashed.append(name)
    return found, unhashed


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check() -> int:
    from packaging.requirements import Requirement

    problems: list[str] = []
    dev_pins: dict[str, str] = {}
    for lock, (pyprojects, req_files) in LOCKS.items():
        path = ROOT / "requirements" / f"{lock}.txt"
        if not path.exists():
            problems.append(f"{path.relative_to(ROOT)} is missing")
            continue
        pinned, unhashed = pins(path)
        if lock == "dev":
            dev_pins = pinned
        for name in unhashed:
            problems.append(f"requirements/{lock}.txt: {name} has no hash")
        for raw in inputs(pyprojects, req_files):
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"python_version": PYTHON_VERSION}):
                continue
            version = pinned.get(canonical(req.name))
            if version is None:
                problems.append(f"requirements/{lock}.txt does not pin {req.name} ({raw})")
            elif not req.specifier.contains(version, prereleases=True):
                problems.append(f"requirements/{lock}.txt pins {req.name}=={version}, outside {raw}")
        if lock != "dev":
            for name, version in pinned.items():
                if dev_pins.get(name) != version:
                    problems.append(
                        f"requirements/{lock}.txt pins {name}=={version}, "
                        f"requirements/dev.txt {dev_pins.get(name, 'nothing')}"
                    )
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("the locks are stale: run `make lock` and commit requirements/", file=sys.stderr)
        return 1
    print(f"locks up to date ({', '.join(f'requirements/{n}.txt' for n in LOCKS)})")
    return 0


def lock(extra: list[str]) -> int:
    uv = os.environ.get("UV") or str(ROOT / ".venv/bin/uv")
    for name, (pyprojects, req_files) in LOCKS.items():
        out = f"requirements/{name}.txt"
        cmd = [
            uv,
            "pip",
            "compile",
            "-",
            "-o",
            out,
            "--universal",
            "--python-version",
            PYTHON_VERSION,
            "--generate-hashes",
            "--custom-compile-command",
            "make lock",
            "--quiet",
            *extra,
        ]
        if name != "dev":
            cmd += ["-c", "requirements/dev.txt"]
        # Inputs on stdin: annotations then read "via -r -" wherever the lock is made.
        subprocess.run(cmd, input="\n".join(inputs(pyprojects, req_files)) + "\n", text=True, cwd=ROOT, check=True)
        print(f"wrote {out}")
    return check()


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(check() if args == ["--check"] else lock(args))
