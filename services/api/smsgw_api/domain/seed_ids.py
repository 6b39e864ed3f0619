"""The seed's ids that stay usable after `import-seed` (smsgw_api/seed_import/):
`seed_rows` maps each imported seed row to the row it became, so a seed
client's `sim_card_id` given as the seed's UUID finds the imported SIM."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, select

from smsgw_api.core.errors import ValidationError
from smsgw_api.core.extensions import db
from smsgw_common.models import SimCard

# Created by migration 0005; not an ORM model because only the importer and
# this lookup touch it.
SEED_ROWS = Table(
    "seed_rows",
    MetaData(),
    Column("seed_table", String(16), primary_key=True),
    Column("seed_id", String(64), primary_key=True),
    Column("target_table", String(32)),
    Column("target_id", BigInteger),
    Column("imported_at", DateTime(timezone=True)),
)


def imported_sim(value: str) -> int | None:
    """The id of the SIM the seed's SIM `value` (its UUID) was imported as."""
    # A connection of its own, given back at once: the send that follows
    # takes another, and holding two per request starves the pool.
    with db.engine.connect() as conn:
        return conn.execute(
            select(SimCard.id)
            .join(SEED_ROWS, SEED_ROWS.c.target_id == SimCard.id)
            .where(SEED_ROWS.c.seed_table == "sim_card", SEED_ROWS.c.seed_id == value)
        ).scalar()


def seed_sim_id(value):
    """`sim_card_id` as a seed client sends it: the seed's UUID of a SIM
    becomes the id of the SIM it was imported as; anything else is returned
    as it came."""
    if not isinstance(value, str):
        return value
    try:
        seed_id = str(uuid.UUID(value.strip()))
    except ValueError:
        return value
    target = imported_sim(seed_id)
    if target is None:
        raise ValidationError(
            {"sim_card_id": f"no SIM card imported from the seed with id {value}"}, message="Invalid SIM card ID!"
        )
    return target
