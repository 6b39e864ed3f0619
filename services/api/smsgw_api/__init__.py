"""Edge SMS Gateway REST API (Flask). `create_app` is the factory.

Imported lazily: gunicorn's master loads `smsgw_api.gunicorn_conf` and should
not carry the whole application (tens of MB that the worker, which builds its
own app after the fork, would only partly share).
"""

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
