"""Who reads which audit lines (docs/security.md, "Audit log visibility").

The audit log holds client addresses, logins, user and key changes and
webhook URLs (which name hosts on the LAN). An admin reads all of it. Anyone
else reads their own lines in full and the operational record everyone
shares (messages sent and cancelled, SIM and modem actions, opt-outs)
without the client address of whoever acted.
"""

from __future__ import annotations

from sqlalchemy import Select, or_

from smsgw_api.core.security import Principal

# Actions that describe the gateway's traffic and hardware, not people.
OPERATIONAL_ACTIONS = (
    "send_sms",
    "cancel_sms",
    "add_sim_card",
    "update_sim_card",
    "delete_sim_card",
    "ussd",
    "opt_out_add",
    "opt_out_remove",
)


def visible_logs(stmt: Select, columns, principal: Principal) -> Select:
    if principal.is_admin:
        return stmt
    return stmt.where(or_(columns.user_id == principal.user_id, columns.action.in_(OPERATIONAL_ACTIONS)))


def redact_log_row(row: dict, principal: Principal) -> dict:
    if not principal.is_admin and row.get("user_id") != principal.user_id:
        row["ip"] = None
    return row
