"""What one accepted send costs the database, once the caller and the SIMs
are known to the process (auth cache, routing snapshot): one statement, in
autocommit, so one round trip that is also the commit (bench/accept_ceiling.py
measures what that buys). Durability is unchanged: the row is committed
before the answer, as every other send test checks."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from .api_support import api_env, cached_in, close_app, count_rows, make_persona, new_app, unique_number


@pytest.fixture
def caching_app(database_url, redis_url, mqtt_prefix):
    """The API as deployed caches routing for a second (tests turn it off)."""
    app = new_app(api_env(database_url, redis_url, mqtt_prefix, ROUTING_CACHE_SECONDS=60))
    yield app
    close_app(app)


def test_a_send_from_a_known_caller_is_one_statement_in_autocommit(caching_app, engine, sim):
    from smsgw_api.core.extensions import runtime

    sofia = make_persona(engine, "sofia-one-trip", "user")
    client = caching_app.test_client()
    cached_in(caching_app, sofia.headers)
    first = client.post("/api/sms", json={"recipient": unique_number(), "message": "warm"}, headers=sofia.headers)
    assert first.status_code == 200, first.get_json()  # the routing snapshot is loaded now

    statements: list[tuple[str, bool]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement.split()[0], conn.connection.dbapi_connection.autocommit))

    db_engine = runtime(caching_app).engine
    event.listen(db_engine, "before_cursor_execute", seen)
    try:
        recipient = unique_number()
        sent = client.post("/api/sms", json={"recipient": recipient, "message": "one trip"}, headers=sofia.headers)
    finally:
        event.remove(db_engine, "before_cursor_execute", seen)
    assert sent.status_code == 200, sent.get_json()
    assert statements == [("WITH", True)]
    assert count_rows(engine, "messages", "recipient = :r AND status = 'queued'", r=recipient) == 1
