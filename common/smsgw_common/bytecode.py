"""A container's first start compiles the service's imports, then starts the
service over in a fresh process that only reads bytecode.

    bytecode.compile_then_restart("modem-worker", "import smsgw_worker.worker")

The images carry no bytecode (it would be a third of their size), so each
container compiles what it imports, into PYTHONPYCACHEPREFIX in its own
writable layer. A process that compiles its own imports keeps the
compiler's leftovers as RSS for its whole life (memory freed in arenas that
Python's and glibc's allocators cannot hand back): about 10 MB of the modem
worker's and of the API worker's (bench/first_start_rss.py). So the first
start runs the imports, marks them done under the prefix, and execs its own
command line again: same PID, same signals, a fresh heap. Later starts of
the container find the mark and go straight on.

Without a prefix (a checkout, a virtualenv) bytecode sits beside the sources
from the first run on, and nothing is done. Imports that fail, or a mark
that cannot be written, leave the service to go on in this process and
compile for itself, as it did before: never a restart loop.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def _mark(service: str, code: str) -> Path | None:
    prefix = sys.pycache_prefix
    if not prefix or sys.dont_write_bytecode:
        return None
    # Other imports (a new image's entry points) are another mark.
    return Path(prefix) / f".compiled-{service}-{hashlib.sha1(code.encode()).hexdigest()[:12]}"


def compile_ahead(service: str, code: str) -> bool:
    """Run `code` (the service's imports) once per container, writing its
    bytecode; True when it ran now and the mark is written."""
    mark = _mark(service, code)
    if mark is None or mark.exists():
        return False
    try:
        exec(compile(code, f"<{service} imports>", "exec"), {"__name__": f"_{service}_imports"})
    except Exception as exc:
        print(f"{service}: compiling imports ahead failed ({exc!r}); going on", file=sys.stderr)
        return False
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError as exc:
        print(f"{service}: cannot mark its imports compiled ({exc}); going on", file=sys.stderr)
        return False
    return True


def compile_then_restart(service: str, code: str) -> None:
    """compile_ahead, then, when it compiled, exec this command line again."""
    if compile_ahead(service, code):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
