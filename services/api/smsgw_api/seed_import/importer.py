"""Writing the seed's rows here, in the caller's transaction, and the
report of what was done (__init__.py says what goes where and why)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import create_engine, insert, inspect, select, text

from smsgw_api.domain.seed_ids import SEED_ROWS
from smsgw_common import segments as seg
from smsgw_common.models import (
    DELIVERED,
    EXPIRED,
    FAILED,
    RECEIVED,
    UNKNOWN,
    ApiKey,
    Log,
    Message,
    SimCard,
    User,
)

from .seed import (
    SEED_SCHEMA,
    UNUSABLE_PASSWORD,
    SeedError,
    canonical_id,
    checkable,
    clip,
    open_seed,
    seed_rows,
    sim_number,
    uses_published_default,
    utc,
)

NEVER_CONFIRMED = "imported from the seed: never confirmed"
SEED_KEY = re.compile(r"[0-9a-fA-F]{64}")
SEED_KEY_NAME = "seed"
# A key's `prefix` finds its row (security.py): the seed's keys carry no
# "sgw_" mark, so their first 12 hex characters serve, as long as new keys'.
SEED_KEY_PREFIX_LENGTH = 12
ROLE_MAP = {
    "admin": "admin",
    "administrator": "admin",
    "superuser": "admin",
    "user": "user",
    "operator": "user",
    "sender": "user",
    "viewer": "viewer",
    "readonly": "viewer",
    "read-only": "viewer",
    "guest": "viewer",
}
SIM_STATUS_MAP = {
    "active": "active",
    "online": "active",
    "enabled": "active",
    "inactive": "inactive",
    "offline": "inactive",
    "disabled": "inactive",
    "blocked": "inactive",
}
DIRECTION_MAP = {"incoming": "inbound", "outgoing": "outbound", "inbound": "inbound", "outbound": "outbound"}
ACTOR = "seed import"


# --- the report ----------------------------------------------------------------


@dataclass
class Report:
    imported: dict = field(default_factory=lambda: defaultdict(int))
    present: dict = field(default_factory=lambda: defaultdict(int))
    skipped: dict = field(default_factory=lambda: defaultdict(list))  # table -> [(seed id, reason)]
    notes: list = field(default_factory=list)

    @property
    def new(self) -> int:
        return sum(self.imported.values())

    def render(self, path: str, dry_run: bool) -> str:
        out = [f"seed import of {path}" + (" (DRY RUN: nothing was written)" if dry_run else "")]
        out.append(f"{'table':<12} {'imported':>9} {'already present':>16} {'skipped':>8}")
        for table in SEED_SCHEMA:
            out.append(f"{table:<12} {self.imported[table]:>9} {self.present[table]:>16} {len(self.skipped[table]):>8}")
        verb = "would be new" if dry_run else "new"
        out.append(
            f"total: {self.new} {verb}, {sum(self.present.values())} already present, "
            f"{sum(len(v) for v in self.skipped.values())} skipped"
        )
        if self.notes:
            out.append("notes:")
            out += [f"  - {n}" for n in self.notes]
        skipped = [(t, i, r) for t, rows in self.skipped.items() for i, r in rows]
        if skipped:
            out.append("skipped:")
            out += [f"  - {t} {i}: {r}" for t, i, r in skipped]
        return "\n".join(out)


# --- writing -------------------------------------------------------------------


class Importer:
    def __init__(self, conn, seed: sqlite3.Connection):
        self.conn = conn  # a SQLAlchemy connection inside the one transaction
        self.seed = seed
        self.report = Report()
        self.now = datetime.now(UTC)
        self.maps: defaultdict[str, dict[str, int]] = defaultdict(dict)  # seed table -> {seed id: target id}
        for r in conn.execute(select(SEED_ROWS.c.seed_table, SEED_ROWS.c.seed_id, SEED_ROWS.c.target_id)):
            self.maps[r.seed_table][r.seed_id] = r.target_id
        self.sim_by_seed_number: dict[str, int] = {}
        # A SIM deleted since an earlier run keeps its map entry; messages
        # imported now must not point at it.
        self.sim_ids = {row.id for row in conn.execute(select(SimCard.id))}

    def _remember(self, table: str, rows: list[tuple[str, str, int]]) -> None:
        if rows:
            self.conn.execute(
                insert(SEED_ROWS),
                [
                    {
                        "seed_table": table,
                        "seed_id": sid,
                        "target_table": target,
                        "target_id": tid,
                        "imported_at": self.now,
                    }
                    for sid, target, tid in rows
                ],
            )
            for sid, _, tid in rows:
                self.maps[table][sid] = tid

    def _insert(self, table, rows: list[dict]) -> list[int]:
        if not rows:
            return []
        result = self.conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
        return [r.id for r in result]

    def run(self) -> Report:
        self.users()
        self.sims()
        self.messages()
        self.logs()
        self.statuses()
        return self.report

    # users

    def users(self) -> None:
        r = self.report
        U, K = User.__table__, ApiKey.__table__
        taken = {row.username.lower() for row in self.conn.execute(select(U.c.username))}
        prefixes = {row.prefix for row in self.conn.execute(select(K.c.prefix))}
        for row in seed_rows(self.seed, "user"):
            sid = canonical_id(row["id"])
            if sid in self.maps["user"]:
                r.present["user"] += 1
                continue
            name = (row["username"] or "").strip()
            if not re.fullmatch(r"[A-Za-z0-9_.@-]{3,64}", name):
                r.skipped["user"].append((sid, f"username {name!r} is not 3-64 letters, digits, _ . @ -"))
                continue
            if name.lower() in taken:
                # The gateway's own account (its bootstrap admin, say) is never
                # touched: the seed's comes in beside it, under another name.
                renamed = f"{name[:59]}-seed"
                if renamed.lower() in taken:
                    r.skipped["user"].append((sid, f"username {name!r} and {renamed!r} both exist here"))
                    continue
                r.notes.append(f"user {name!r}: the name exists on this gateway; imported as {renamed!r}")
                name = renamed
            role = ROLE_MAP.get((row["role"] or "").strip().lower())
            if role is None:
                role = "user"
                r.notes.append(f"user {name!r}: unknown seed role {row['role']!r}, imported as 'user'")
            password_hash, active, key = row["password_hash"], True, row["api_key"]
            if not checkable(password_hash):
                password_hash = UNUSABLE_PASSWORD
                r.notes.append(
                    f"user {name!r}: the seed's password hash is missing or in a form this gateway "
                    "cannot check; an admin must set a new password (PUT /api/users/<id>)"
                )
            elif uses_published_default(password_hash, row["username"] or ""):
                password_hash, active, key = UNUSABLE_PASSWORD, False, None
                # Anyone who logged in with the default could read this key
                # (the seed's login returned it), so it is not carried over either.
                r.notes.append(
                    f"user {name!r}: the seed's password is a published default; imported DISABLED "
                    "with no usable password and without its API key: an admin must set a new "
                    "password and re-enable it (PUT /api/users/<id>)"
                )
            user_id = self._insert(
                U,
                [
                    {
                        "username": name,
                        "password_hash": password_hash,
                        "role": role,
                        "is_active": active,
                        "created_at": self.now,
                    }
                ],
            )[0]
            taken.add(name.lower())
            if key:
                key = str(key).strip()
                if not SEED_KEY.fullmatch(key):
                    r.notes.append(f"user {name!r}: the seed's API key is not 64 hex characters; not carried over")
                elif key[:SEED_KEY_PREFIX_LENGTH] in prefixes:
                    r.notes.append(
                        f"user {name!r}: the seed's API key shares its prefix with another key; "
                        "not carried over (create a new one)"
                    )
                else:
                    prefix = key[:SEED_KEY_PREFIX_LENGTH]
                    self.conn.execute(
                        insert(K).values(
                            user_id=user_id,
                            name=SEED_KEY_NAME,
                            prefix=prefix,
                            key_hash=hashlib.sha256(key.encode()).hexdigest(),
                            created_at=self.now,
                        )
                    )
                    prefixes.add(prefix)
            self._remember("user", [(sid, "users", user_id)])
            r.imported["user"] += 1

    # SIM cards

    def sims(self) -> None:
        r = self.report
        S = SimCard.__table__
        by_number = {row.number: row.id for row in self.conn.execute(select(S.c.id, S.c.number)) if row.number}
        for row in seed_rows(self.seed, "sim_card"):
            sid = canonical_id(row["id"])
            number = sim_number(row["number"])
            if sid in self.maps["sim_card"]:
                r.present["sim_card"] += 1
                if row["number"]:
                    self.sim_by_seed_number[str(row["number"]).strip()] = self.maps["sim_card"][sid]
                continue
            if number is None:
                r.skipped["sim_card"].append((sid, f"number {row['number']!r} is not a phone number"))
                continue
            if number in by_number:
                # A worker (or an admin) already knows this SIM: the seed's id
                # points at it; nothing about it is changed.
                target = by_number[number]
                self._remember("sim_card", [(sid, "sim_cards", target)])
                r.present["sim_card"] += 1
                r.notes.append(f"SIM {number}: exists here already (id {target}); the seed's id {sid} now refers to it")
            else:
                status = SIM_STATUS_MAP.get((row["status"] or "").strip().lower())
                if status is None:
                    status = "inactive"
                    r.notes.append(f"SIM {number}: unknown seed status {row['status']!r}, imported inactive")
                target = self._insert(
                    S,
                    [
                        {
                            "number": number,
                            "status": status,
                            "label": "seed",
                            "created_at": self.now,
                            "updated_at": self.now,
                        }
                    ],
                )[0]
                by_number[number] = target
                self.sim_ids.add(target)
                self._remember("sim_card", [(sid, "sim_cards", target)])
                r.imported["sim_card"] += 1
            self.sim_by_seed_number[str(row["number"]).strip()] = target

    def _sim_of(self, sender_sim) -> tuple[int | None, str | None]:
        """The seed's `sender_sim` (a SIM's UUID, or its number in older rows):
        (SIM id here, SIM number)."""
        if sender_sim in (None, ""):
            return None, None
        value = str(sender_sim).strip()
        sim_id = self.maps["sim_card"].get(canonical_id(value))
        if sim_id is None:
            sim_id = self.sim_by_seed_number.get(value)
        if sim_id not in self.sim_ids:
            sim_id = None
        number = sim_number(value)
        if sim_id is not None and number is None:
            number = self.conn.execute(select(SimCard.number).where(SimCard.id == sim_id)).scalar()
        return sim_id, number if number else clip(value, 32)

    # messages

    def _board_reports(self) -> dict:
        """The boards' reports (seed `sms_status`) by (recipient, text), oldest first."""
        reports = defaultdict(list)
        for row in seed_rows(self.seed, "sms_status"):
            reports[(row["receiver_number"], row["message"])].append(row)
        return reports

    def messages(self) -> None:
        r = self.report
        reports = self._board_reports()
        batch, ids = [], []
        for row in seed_rows(self.seed, "message"):
            sid = canonical_id(row["id"])
            if sid in self.maps["message"]:
                r.present["message"] += 1
                continue
            direction = DIRECTION_MAP.get((row["direction"] or "").strip().lower())
            if direction is None:
                r.skipped["message"].append((sid, f"direction {row['direction']!r} is neither incoming nor outgoing"))
                continue
            if not isinstance(row["message"], str):
                r.skipped["message"].append((sid, "no text"))
                continue
            if len(str(row["sender"] or "")) > 64 or len(str(row["recipient"] or "")) > 64:
                r.skipped["message"].append((sid, "sender or recipient longer than 64 characters"))
                continue
            at = utc(row["timestamp"]) or self.now
            sim_id, sim_num = self._sim_of(row["sender_sim"])
            info = seg.analyze(row["message"]) if row["message"] else None
            values = {
                "direction": direction,
                "sender": row["sender"],
                "recipient": row["recipient"],
                "message": row["message"],
                "encoding": info.encoding if info else "GSM-7",
                "segments": info.segments if info else 1,
                "sim_card_id": sim_id,
                "sender_sim": sim_num,
                "timestamp": at,
                "updated_at": self.now,
                **dict.fromkeys(("received_at", "sent_at", "delivered_at", "failed_at", "expired_at")),
                "error_text": None,
            }
            if direction == "inbound":
                values.update(status=RECEIVED, received_at=at)
            else:
                values.update(self._outbound_state(row, at, reports))
            batch.append(values)
            ids.append(sid)
        new_ids = self._insert(Message.__table__, batch)
        self._remember("message", [(sid, "messages", mid) for sid, mid in zip(ids, new_ids)])
        r.imported["message"] += len(new_ids)

    def _outbound_state(self, row: dict, at: datetime, reports: dict) -> dict:
        """The seed left its sends `pending` (its boards' reports went to
        `sms_status` only). A board's report of the same text to the same
        number, at or after the message, tells what happened; without one
        the message may or may not have left: `unknown`, never queued again."""
        status = (row["status"] or "").strip().lower()
        for report in reversed(reports.get((row["recipient"], row["message"]), [])):
            rat = utc(report["timestamp"])
            if rat is None or rat >= at:
                reported = (report["status"] or "").strip().lower()
                if reported in ("delivered", "failed", "sent"):
                    status, at = reported, rat or at
                    break
        if status == "delivered":
            return {"status": DELIVERED, "delivered_at": at}
        if status == "failed":
            return {"status": FAILED, "failed_at": at, "error_text": "imported from the seed: reported failed"}
        if status == "sent":
            # It left; no delivery report ever came: what `expired` means here.
            return {
                "status": EXPIRED,
                "sent_at": at,
                "expired_at": self.now,
                "error_text": "imported from the seed: sent, no delivery report",
            }
        if status == "pending":
            return {"status": UNKNOWN, "error_text": NEVER_CONFIRMED}
        return {"status": UNKNOWN, "error_text": f"imported from the seed: status {row['status']!r}"}

    # logs and the boards' status reports: both into the audit trail

    def _log_rows(self, table: str, rows: list[dict], make) -> None:
        r = self.report
        batch, ids = [], []
        for row in rows:
            sid = canonical_id(row["id"])
            if sid in self.maps[table]:
                r.present[table] += 1
                continue
            batch.append(
                {
                    **make(row),
                    "timestamp": utc(row["timestamp"]) or self.now,
                    "actor": ACTOR,
                    "user_id": None,
                    "ip": None,
                    "request_id": None,
                }
            )
            ids.append(sid)
        new_ids = self._insert(Log.__table__, batch)
        self._remember(table, [(sid, "logs", lid) for sid, lid in zip(ids, new_ids)])
        r.imported[table] += len(new_ids)

    def logs(self) -> None:
        def make(row):
            return {
                "action": clip(row["action"] or "seed", 64),
                "details": row["details"],
                "status": clip(row["status"] or "success", 16),
                "sender_sim": self._sim_of(row["sender_sim"])[1],
            }

        self._log_rows("log", seed_rows(self.seed, "log"), make)

    def statuses(self) -> None:
        def make(row):
            details = {k: row[k] for k in ("sender_number", "receiver_number", "message", "status")}
            return {
                "action": "sms_status",
                "details": json.dumps(details, ensure_ascii=False),
                "status": clip(row["status"] or "unknown", 16),
                "sender_sim": clip(row["sender_number"], 32),
            }

        self._log_rows("sms_status", seed_rows(self.seed, "sms_status"), make)


def import_seed(database_url: str, path: str, dry_run: bool = False) -> Report:
    seed = open_seed(path)
    engine = create_engine(database_url)
    try:
        if not inspect(engine).has_table("seed_rows"):
            raise SeedError(
                "the database has no seed_rows table: apply the migrations first (python -m smsgw_api migrate)"
            )
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                # One import at a time: a second one waits, then finds the first one's rows.
                conn.execute(text("LOCK TABLE seed_rows IN EXCLUSIVE MODE"))
                report = Importer(conn, seed).run()
            except BaseException:
                trans.rollback()
                raise
            if dry_run:
                trans.rollback()
            else:
                trans.commit()
        return report
    finally:
        engine.dispose()
        seed.close()
