"""Domain objects a blueprint reaches through the app (one per app, built in app.py)."""

from __future__ import annotations

from flask import Flask, current_app

from smsgw_api.domain.routing import Router

ROUTER_KEY = "smsgw_router"


def router(app: Flask | None = None) -> Router:
    return (app or current_app).extensions[ROUTER_KEY]
