"""The modem's and its SIM's rows, written when the worker brings a modem up.

A SIM is known by its ICCID (or, before any worker saw it, by the number an
admin gave it); a SIM that left this modem is detached from it.
"""

from __future__ import annotations

from sqlalchemy import select, update

from smsgw_common.models import Modem, SimCard, utcnow
from smsgw_worker.atmodem import Identity

from .context import WorkerContext


def register(ctx: WorkerContext, identity: Identity) -> None:
    now = utcnow()
    with ctx.Session.begin() as session:
        row = session.get(Modem, ctx.modem_id)
        if row is None:
            row = Modem(id=ctx.modem_id)
            session.add(row)
        row.imei, row.device_path = identity.imei, ctx.device
        row.manufacturer, row.model, row.firmware = identity.manufacturer, identity.model, identity.firmware
        row.online, row.last_seen_at, row.last_error = True, now, None
        row.node, row.site = ctx.settings.node, ctx.settings.site
        session.flush()
        sim = None
        if identity.iccid:
            sim = session.scalar(select(SimCard).where(SimCard.iccid == identity.iccid))
            if sim is None and identity.number:
                # A SIM an admin created by number before any worker saw it.
                sim = session.scalar(select(SimCard).where(SimCard.number == identity.number, SimCard.iccid.is_(None)))
        else:
            sim = session.scalar(select(SimCard).where(SimCard.modem_id == ctx.modem_id).order_by(SimCard.id))
        if sim is None:
            sim = SimCard(status="active")
            session.add(sim)
        sim.iccid = identity.iccid or sim.iccid
        sim.imsi = identity.imsi or sim.imsi
        sim.modem_id = ctx.modem_id
        sim.last_seen_at = now
        if identity.number:
            sim.number = identity.number
        session.flush()
        # A SIM that left this modem is no longer here.
        session.execute(
            update(SimCard).where(SimCard.modem_id == ctx.modem_id, SimCard.id != sim.id).values(modem_id=None)
        )
        ctx.sim_card_id, ctx.sim_number = sim.id, sim.number
    ctx.offline_reason, ctx.last_error = None, None
