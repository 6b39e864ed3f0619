"""`python -m smsgw_api import-seed PATH/sms_gateway.db [--dry-run]`: bring the
seed's users, SIM cards, messages, logs and board status reports into this
gateway (docs/migrating-from-the-seed.md).

The seed's file is opened read-only and never written. Everything is written
in one transaction; a dry run performs the same work and rolls it back, so
what it reports is exactly what a real run would do. The seed's ids are kept
in `seed_rows` (migration 0005): a second run finds every row there and
changes nothing.

Imported history does not pass through the live pipeline: messages get no
`message_events` rows, so webhooks never fire for year-old messages, and
nothing is queued again.
"""

from __future__ import annotations

from .cli import add_arguments, cli
from .importer import NEVER_CONFIRMED, Importer, Report, import_seed
from .seed import SeedError, open_seed

__all__ = ["NEVER_CONFIRMED", "Importer", "Report", "SeedError", "add_arguments", "cli", "import_seed", "open_seed"]
