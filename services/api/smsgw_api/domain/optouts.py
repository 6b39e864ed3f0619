"""STOP/START: which inbound texts are opt-out or opt-in keywords, and
applying one to the opt-out list (routes/optouts.py tells the whole story)."""

from __future__ import annotations

import re

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert

from smsgw_api.core.settings import PipelineSettings
from smsgw_api.domain.numbers import normalize_sender
from smsgw_common.models import OptOut

_TRAILING = re.compile(r"[\s.!?,;:]+$")


def keyword_of(text: str | None) -> str | None:
    if not text:
        return None
    word = _TRAILING.sub("", text.strip()).upper()
    return word if word and " " not in word and len(word) <= 20 else None


def apply_keyword(session, s: PipelineSettings, sender: str | None, text: str | None) -> dict | None:
    """Handle STOP/START in an inbound SMS; returns the change, if any.
    Runs in the caller's transaction."""
    word = keyword_of(text)
    if not word or not sender:
        return None
    number = normalize_sender(sender)
    if word in s.optout_keywords:
        inserted = session.execute(
            insert(OptOut)
            .values(number=number, source="keyword", note=f"received {word}")
            .on_conflict_do_nothing(index_elements=["number"])
            .returning(OptOut.id)
        ).first()
        return {"number": number, "opted_out": True, "keyword": word} if inserted else None
    if word in s.optin_keywords:
        removed = session.execute(delete(OptOut).where(OptOut.number == number)).rowcount
        return {"number": number, "opted_out": False, "keyword": word} if removed else None
    return None
