"""`python -m smsgw_api <command>`

serve                      migrate, bootstrap the first admin, exec gunicorn
pipeline                   the leader-elected background loops alone, no HTTP
                           (run the API with PIPELINE_BACKGROUND=off then)
migrate                    wait for Postgres, alembic upgrade head
create-admin --username U  create (or reset) an admin; password from
                           --password-file or a prompt, never a default
import-seed PATH [--dry-run]  import the seed's sms_gateway.db (seed_import/)
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from smsgw_api import migrate, seed_import
from smsgw_api.core.errors import ApiError
from smsgw_api.core.settings import ApiSettings
from smsgw_api.domain.accounts import check_new_password, check_username, end_sessions, hash_password
from smsgw_api.domain.nodes import write_broker_file
from smsgw_api.pipeline import runner
from smsgw_common import bytecode, jsonlog
from smsgw_common.models import User
from smsgw_common.settings import SettingsError, env_bool, env_log_level

# What gunicorn's master and workers import (gevent's patched modules
# included, without patching this process).
GUNICORN_IMPORTS = (
    "import gevent.monkey, gevent.socket, gevent.ssl, gevent.threading, gevent.select, gevent.subprocess\n"
    "import gunicorn.app.wsgiapp, gunicorn.workers.ggevent, psycogreen.gevent, smsgw_api.gunicorn_conf, smsgw_api.app"
)
log = logging.getLogger("smsgw_api")


def _settings():
    return ApiSettings.from_env()


def _session(settings):
    engine = create_engine(settings.database_url)
    return engine, Session(engine)


def bootstrap_admin(settings) -> str | None:
    """Create the first admin from ADMIN_PASSWORD(_FILE) when no user exists.
    Returns the username created, or None."""
    engine, session = _session(settings)
    try:
        if session.scalar(select(func.count()).select_from(User)):
            return None
        if not settings.admin_password:
            log.warning(
                "no user exists yet: create one with `python -m smsgw_api create-admin --username NAME` "
                "or set ADMIN_PASSWORD_FILE"
            )
            return None
        check_new_password(settings.admin_password)
        session.add(
            User(username=settings.admin_username, password_hash=hash_password(settings.admin_password), role="admin")
        )
        session.commit()
        log.info("created the first admin %r from ADMIN_PASSWORD", settings.admin_username)
        return settings.admin_username
    finally:
        session.close()
        engine.dispose()


def write_node_users(settings) -> None:
    """The broker's file of edge nodes' users, from Postgres: a new or lost
    volume gets it back at start (domain/nodes.py)."""
    if not settings.nodes_broker_file:
        return
    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            count = write_broker_file(conn, settings.nodes_broker_file)
        log.info("edge nodes' broker users written: %d", count)
    except OSError as exc:
        # The API serves without it; enrolling or revoking a node then says why it cannot.
        log.error("cannot write NODES_BROKER_FILE %s: %s", settings.nodes_broker_file, exc)
    finally:
        engine.dispose()


def create_admin(settings, username: str, password: str) -> str:
    username = check_username(username)
    check_new_password(password)
    engine, session = _session(settings)
    try:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            session.add(User(username=username, password_hash=hash_password(password), role="admin"))
            outcome = "created"
        else:
            user.password_hash, user.role, user.is_active = hash_password(password), "admin", True
            end_sessions(session, user.id)  # a reset password ends the old sessions (docs/security.md)
            outcome = "updated"
        session.commit()
        return outcome
    finally:
        session.close()
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smsgw_api", description="Edge SMS Gateway API")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run migrations, bootstrap the first admin, then exec gunicorn")
    sub.add_parser("migrate", help="wait for the database and apply migrations")
    sub.add_parser("pipeline", help="run the events leader election and its loops, without the HTTP app")
    ca = sub.add_parser("create-admin", help="create an admin user (or reset its password)")
    ca.add_argument("--username", required=True)
    ca.add_argument("--password-file", help="read the password from this file (else prompt)")
    seed_import.add_arguments(sub.add_parser("import-seed", help="import the seed's SQLite database"))
    args = parser.parse_args(argv)

    try:
        jsonlog.setup("api", env_log_level(), env_bool("LOG_JSON", True))
        if args.command == "import-seed":  # needs only the database, not the API's secrets
            return seed_import.cli(args)
        settings = _settings()
    except SettingsError as exc:
        print(f"smsgw-api: configuration error: {exc}", file=sys.stderr)
        return 2

    if args.command == "migrate":
        migrate.wait_for_database(settings.database_url)
        migrate.upgrade(settings.database_url)
        return 0

    if args.command == "pipeline":
        migrate.wait_for_database(settings.database_url)
        jsonlog.exit_when_a_thread_dies()
        return runner.run(settings)

    if args.command == "create-admin":
        migrate.wait_for_database(settings.database_url)
        if args.password_file:
            try:
                with open(args.password_file, encoding="utf-8") as fh:
                    password = fh.read().strip()
            except OSError as exc:
                print(f"cannot read {args.password_file}: {exc.strerror}", file=sys.stderr)
                return 2
        else:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Repeat: "):
                print("passwords do not match", file=sys.stderr)
                return 2
        try:
            outcome = create_admin(settings, args.username, password)
        except ApiError as exc:
            print(f"refused: {exc.message}", file=sys.stderr)
            return 2
        print(f"admin {args.username!r} {outcome}")
        return 0

    # serve
    migrate.wait_for_database(settings.database_url)
    migrate.upgrade(settings.database_url)
    try:
        bootstrap_admin(settings)
    except ApiError as exc:
        print(f"smsgw-api: ADMIN_PASSWORD refused: {exc.message}", file=sys.stderr)
        return 2
    write_node_users(settings)
    # Compiled here, so that gunicorn's processes (fresh after the exec below)
    # read bytecode and keep no compiler leftovers (smsgw_common/bytecode.py).
    bytecode.compile_ahead("api", GUNICORN_IMPORTS)
    gunicorn_args = ["gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"]
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, so that signals from the container runtime reach gunicorn itself.
    os.execvp(sys.executable, [sys.executable, "-m", *gunicorn_args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
