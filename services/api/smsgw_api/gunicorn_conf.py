"""gunicorn settings for the API (`gunicorn -c python:smsgw_api.gunicorn_conf smsgw_api.wsgi:app`).

gevent workers: one process serves many slow clients (long polls, USSD
waits, Socket.IO) cheaply. psycopg2 is a C library and would block the whole
worker on every query, so psycogreen's wait callback is installed in each
worker before the app (and its first database connection) exists.
"""

import os

# An empty variable (an env file's `LOG_LEVEL=`) means the default, as in every service.
from smsgw_common.settings import env_bool, env_int, env_log_level, env_str, env_value

bind = env_str("API_BIND", f"0.0.0.0:{env_int('API_PORT', 5001)}")
workers = env_int("GUNICORN_WORKERS", 2)
worker_class = env_str("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = env_int("GUNICORN_WORKER_CONNECTIONS", 1000)
timeout = env_int("GUNICORN_TIMEOUT", 60)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = env_int("GUNICORN_KEEPALIVE", 5)
accesslog = env_value("GUNICORN_ACCESSLOG")  # None: the app logs requests itself
errorlog = "-"
loglevel = env_log_level().lower()
preload_app = False  # each worker builds its own app after the fork (MQTT thread, DB pool)
forwarded_allow_ips = env_str("FORWARDED_ALLOW_IPS", "127.0.0.1")
# No runtime control socket (gunicorn >= 25 opens one under $HOME): nothing
# uses it, the image's user has no home (an ERROR at every start), and it
# would be one more way to stop or resize the API.
control_socket_disable = True


def _patch_psycopg() -> None:
    if "gevent" in worker_class:
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def post_fork(server, worker):
    _patch_psycopg()
    from smsgw_common import jsonlog

    jsonlog.setup("api", env_log_level(), env_bool("LOG_JSON", True))


def post_worker_init(worker):
    # The background pipeline (leader election, sweeper, webhooks, opt-outs)
    # runs inside each worker, started here and never by create_app(); the
    # worker's app exists by now. Imported here: the master must not load the app.
    from smsgw_api.app import start_pipeline
    from smsgw_api.live.socketio import start_listening

    if hasattr(worker.wsgi, "extensions"):  # not gunicorn's stand-in for an app that failed to load
        start_listening()
        start_pipeline(worker.wsgi)


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    try:
        from smsgw_api.core.extensions import bus
        from smsgw_api.core.liveness import PIPELINE_KEY

        if app is not None and hasattr(app, "extensions"):
            pipeline = app.extensions.get(PIPELINE_KEY)
            if pipeline is not None:
                pipeline.stop()  # hand the leadership over at once
            bus.stop(app)
    except Exception:
        pass


# --- Prometheus request metrics across workers (smsgw_api.core.metrics) ----
# Each worker counts its own requests; with more than one worker they share
# them through files in PROMETHEUS_MULTIPROC_DIR, which must be set before
# any worker imports prometheus_client, and be empty at start.


def on_starting(server):
    import glob
    import tempfile

    path = env_value("PROMETHEUS_MULTIPROC_DIR")
    if not path and workers > 1:
        path = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="smsgw-metrics-")
        server._smsgw_metrics_tmp = path
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)


def on_exit(server):
    path = getattr(server, "_smsgw_metrics_tmp", None)
    if path:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
