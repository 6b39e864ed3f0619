"""Builds the API app for this tier's tests (also imported by the
subprocesses some tests start, hence a plain module)."""

from __future__ import annotations

from smsgw_api.app import create_app


def make(settings, testing: bool = True):
    return create_app({"SMSGW_SETTINGS": settings, "TESTING": testing})
