"""Builds the API app for this tier's tests (also imported by the
subprocesses some tests start, hence a plain module)."""
from __future__ import annotations


def make(settings, testing: bool = True):
    """The real factory when it can be built; while the API is still being
    written, a bare app with the same plumbing (error format, request ids,
    database) and this tier's two modules."""
    try:
        from smsgw_api.app import create_app
    except ImportError:
        create_app = None
    if create_app is not None:
        try:
            return create_app({"SMSGW_SETTINGS": settings, "TESTING": testing})
        except ImportError:
            pass
    from flask import Flask

    from smsgw_api import errors, metrics, statistics, web
    from smsgw_api.extensions import db

    app = Flask("smsgw_api")
    app.config.update(SMSGW_SETTINGS=settings, TESTING=testing)
    db.init_app(app)
    errors.init_app(app)
    web.init_app(app)
    statistics.init_app(app)
    metrics.init_app(app)
    return app
