"""The API package keeps its layers (.importlinter at the repository root):
routes, live and pipeline on domain on core, no cycles between them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "services" / "api" / "smsgw_api"


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _names_imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_core_and_domain_define_no_routes():
    """A blueprint or a Socket.IO server below routes/ and live/ would put
    HTTP back into the layers everything else stands on."""
    offenders = {}
    for layer in ("core", "domain"):
        for path in sorted((PACKAGE / layer).glob("*.py")):
            bad = {n for n in _names_imported(path) if n in ("flask.Blueprint", "flask_socketio.SocketIO")}
            if bad:
                offenders[f"{layer}/{path.name}"] = sorted(bad)
    assert offenders == {}


def test_no_import_hides_inside_a_function():
    """Imports inside functions are how the old flat package hid its cycles.
    Only the gunicorn config (its master must not load the app) and the
    package's lazy `create_app` keep any."""
    allowed = {"gunicorn_conf.py", "__init__.py"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if str(path.relative_to(PACKAGE)) in allowed or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{inner.lineno}")
    assert offenders == []
