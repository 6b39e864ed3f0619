"""The `import-seed` command."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import OperationalError

from smsgw_common.settings import DatabaseSettings

from .importer import import_seed
from .seed import SeedError, open_seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the seed's SQLite file (sms_gateway.db); it is only read")
    parser.add_argument("--dry-run", action="store_true", help="report what would happen, write nothing")


def cli(args) -> int:
    url = DatabaseSettings.from_env().url
    try:
        open_seed(args.path).close()  # refuse a wrong file before touching the database
        report = import_seed(url, args.path, dry_run=args.dry_run)
    except SeedError as exc:
        print(f"import-seed: refused, nothing was written: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"import-seed: the database is not reachable, nothing was written: {exc.orig}", file=sys.stderr)
        return 1
    print(report.render(args.path, args.dry_run))
    return 0
