"""The application factory.

    app = create_app()                          # settings from the environment
    app = create_app({"SMSGW_SETTINGS": s})     # tests: a ready ApiSettings
    app = create_app({"ENV": {...}})            # tests: an environ dict

Blueprints owned elsewhere register themselves through their `init_app(app)`
(statistics, metrics, realtime, webhooks, opt-outs); the sweeper runs
inside the realtime leader.
"""
from __future__ import annotations

from flask import Flask

from . import errors, security, web
from .extensions import bus, db, redis_client
from .settings import ApiSettings


def create_app(config: dict | None = None) -> Flask:
    config = dict(config or {})
    settings = config.pop("SMSGW_SETTINGS", None) or ApiSettings.from_env(config.pop("ENV", None))
    config.pop("ENV", None)

    app = Flask("smsgw_api", static_folder=None)
    app.config.update(SMSGW_SETTINGS=settings, JSON_SORT_KEYS=False, SECRET_KEY=settings.jwt_secret)
    app.json.sort_keys = False
    app.config.update(config)

    db.init_app(app)
    bus.init_app(app)
    redis_client.init_app(app)
    errors.init_app(app)
    web.init_app(app)
    security.init_app(app)

    from . import apikeys, auth, health, logs, messages, modems, openapi, routing, simcards, sms, users

    routing.init_app(app)
    app.register_blueprint(openapi.bp)
    for module in (auth, users, apikeys, simcards, sms, messages, logs, modems, health):
        app.register_blueprint(module.bp)

    # Each registers its own routes and documents them with smsgw_api.openapi.register.
    from . import metrics, optouts, realtime, statistics, webhooks

    for module in (statistics, metrics, realtime, webhooks, optouts):
        module.init_app(app)

    return app
