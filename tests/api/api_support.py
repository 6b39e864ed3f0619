"""Helpers for the API tests: personas, SIMs, row counts (support/api.py);
extra apps on the same database as other processes, and their auth cache."""

from support.api import PASSWORD, Persona, api_env, count_rows, make_persona, make_sim, unique_number
from support.waits import wait_until

__all__ = [
    "PASSWORD",
    "Persona",
    "api_env",
    "cached_in",
    "close_app",
    "count_rows",
    "make_persona",
    "make_sim",
    "new_app",
    "trusts_cache",
    "unique_number",
]


def new_app(env):
    from smsgw_api import create_app

    return create_app({"ENV": env, "TESTING": True})


def close_app(app):
    from smsgw_api.core.extensions import bus, db
    from smsgw_api.core.security import AUTH_CACHE_KEY

    app.extensions[AUTH_CACHE_KEY].stop()
    bus.stop(app)
    db.dispose(app)


def trusts_cache(app, headers) -> bool:
    """Would `app` answer this caller from its cache right now?"""
    from smsgw_api.core.security import AUTH_CACHE_KEY, hash_key

    cache = app.extensions[AUTH_CACHE_KEY]
    with app.app_context():
        generation = cache.generation()
        if "X-API-Key" in headers:
            ident = hash_key(headers["X-API-Key"])
        else:
            import jwt

            claims = jwt.decode(headers["Authorization"][7:], options={"verify_signature": False})
            ident = f"user:{claims['sub']}:{claims.get('tv', 0)}"
        return cache.get(ident, generation) is not None


def cached_in(app, headers) -> None:
    """Ask `app` until it answers this caller from its cache."""
    client = app.test_client()

    def cached():
        assert client.get("/api/me", headers=headers).status_code == 200
        return trusts_cache(app, headers)

    wait_until(cached, 10, 0.02, "the other process to cache the caller")
