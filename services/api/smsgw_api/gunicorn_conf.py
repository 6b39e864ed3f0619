"""gunicorn settings for the API (`gunicorn -c python:smsgw_api.gunicorn_conf smsgw_api.wsgi:app`).

gevent workers: one process serves many slow clients (long polls, USSD
waits, Socket.IO) cheaply. psycopg2 is a C library and would block the whole
worker on every query, so psycogreen's wait callback is installed in each
worker before the app (and its first database connection) exists.
"""
import os

bind = os.environ.get("API_BIND", f"0.0.0.0:{os.environ.get('API_PORT', '5001')}")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None  # the app logs requests itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
preload_app = False  # each worker builds its own app after the fork (MQTT thread, DB pool)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def _patch_psycopg() -> None:
    if "gevent" in worker_class:
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def post_fork(server, worker):
    _patch_psycopg()
    from smsgw_common import jsonlog

    jsonlog.setup("api", os.environ.get("LOG_LEVEL", "INFO").upper(),
                  os.environ.get("LOG_JSON", "true").lower() in ("1", "true", "yes", "on"))


def worker_exit(server, worker):
    app = getattr(worker, "wsgi", None)
    try:
        from smsgw_api.extensions import bus

        if app is not None and hasattr(app, "extensions"):
            bus.stop(app)
    except Exception:
        pass


# --- Prometheus request metrics across workers (smsgw_api.metrics) ---------
# Each worker counts its own requests; with more than one worker they share
# them through files in PROMETHEUS_MULTIPROC_DIR, which must be set before
# any worker imports prometheus_client, and be empty at start.

def on_starting(server):
    import glob
    import tempfile

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
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
