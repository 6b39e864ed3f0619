"""The API's production process (gunicorn with smsgw_api/gunicorn_conf.py)
as its container runs it: as a user whose home does not exist."""

from __future__ import annotations

from .conftest import start_api, stop_process


def test_the_api_starts_with_no_error_in_its_log_and_no_control_socket(pipeline_env, python, tmp_path):
    """gunicorn >= 25 opens a control socket (runtime management: worker
    counts, reload, shutdown) under $HOME by default; the API's image has no
    home, so every start logged an ERROR, and elsewhere it is an interface
    nobody asked for, shared by every gunicorn of the user."""
    home = tmp_path / "nonexistent"
    server = start_api(
        dict(pipeline_env, HOME=str(home), XDG_RUNTIME_DIR="", PIPELINE_BACKGROUND="off"),
        python,
        tmp_path / "gunicorn.log",
        workers=1,
    )
    try:
        assert server.http.get(server.url("/healthz"), timeout=10).status_code == 200
    finally:
        stop_process(server.proc)
    log = server.log()
    assert "[ERROR]" not in log, log
    assert not home.exists()
