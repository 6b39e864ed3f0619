"""The application factory, and the one way to run the pipeline beside it.

    app = create_app()                          # settings from the environment
    app = create_app({"SMSGW_SETTINGS": s})     # tests: a ready ApiSettings
    app = create_app({"ENV": {...}})            # tests: an environ dict
    start_pipeline(app)                         # gunicorn_conf.post_worker_init

`create_app()` starts no background work: the pipeline (pipeline/runner.py)
is started explicitly, by gunicorn in each worker or by `python -m smsgw_api
pipeline` in a process of its own.
"""

from __future__ import annotations

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SessionInterface

from smsgw_api.core import errors, liveness, metrics, security, web
from smsgw_api.core.extensions import bind_runtime, runtime
from smsgw_api.core.runtime import Runtime
from smsgw_api.core.settings import ApiSettings
from smsgw_api.domain.routing import make_router
from smsgw_api.live import socketio as live
from smsgw_api.pipeline import runner
from smsgw_api.routes import (
    apikeys,
    auth,
    health,
    logs,
    messages,
    modems,
    nodes,
    openapi,
    optouts,
    simcards,
    sites,
    sms,
    statistics,
    users,
    webhooks,
)
from smsgw_api.routes import metrics as metrics_route
from smsgw_api.routes.deps import ROUTER_KEY, router


class NoCookieSessions(SessionInterface):
    """Every request carries its API key or bearer token; a cookie session
    would be a second way in, and opening one costs a signer per request.
    `flask.session` is a NullSession: writing to it raises."""

    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response):
        return None


def create_app(config: dict | None = None) -> Flask:
    config = dict(config or {})
    settings = config.pop("SMSGW_SETTINGS", None) or ApiSettings.from_env(config.pop("ENV", None))
    config.pop("ENV", None)

    app = Flask("smsgw_api", static_folder=None)
    app.session_interface = NoCookieSessions()
    app.config.update(SMSGW_SETTINGS=settings, JSON_SORT_KEYS=False)
    if isinstance(app.json, DefaultJSONProvider):  # always: no other provider is installed
        app.json.sort_keys = False
    app.config.update(config)

    rt = Runtime(settings)
    bind_runtime(app, rt)
    errors.init_app(app)
    web.init_app(app)
    security.init_app(app)
    app.extensions[ROUTER_KEY] = make_router(rt)

    app.register_blueprint(openapi.bp)
    for module in (auth, users, apikeys, simcards, sms, messages, logs, modems, health):
        app.register_blueprint(module.bp)
    statistics.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(metrics_route.bp)
    live.init_app(app)
    webhooks.init_app(app)
    optouts.init_app(app)
    sites.init_app(app)
    nodes.init_app(app)
    return app


def start_pipeline(app: Flask) -> runner.Pipeline | None:
    """Run the leader election and, while leading, the loops in this process,
    sharing the app's database pool, broker client and router; /readyz and
    /metrics then report them. PIPELINE_BACKGROUND=off: not here (a separate
    `python -m smsgw_api pipeline` runs them)."""
    if app.config["SMSGW_SETTINGS"].pipeline.background == "off":
        return None
    existing = app.extensions.get(liveness.PIPELINE_KEY)
    if existing is not None:
        return existing
    pipeline = runner.start(runtime(app), router(app))
    liveness.attach(app, pipeline)
    return pipeline
