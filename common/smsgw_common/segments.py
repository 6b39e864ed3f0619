"""GSM 03.38 alphabets and SMS segment counting (3GPP TS 23.038 / 23.040).

Carriers count and cap segments, not messages, so every service must agree on
these numbers: the API for limits and previews, the worker for splitting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# GSM 7-bit default alphabet, indexed by septet value (TS 23.038 6.2.1).
# 0x1B is the escape to the extension table; it has no character of its own.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM7_BASIC) == 128

# Extension table (TS 23.038 6.2.1.1): characters sent as ESC + septet.
# 0x0A is the page break; it is listed so that a received one decodes.
GSM7_EXTENSION = {
    0x0A: "\x0c",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

GSM7_ESCAPE = 0x1B
GSM7_BASIC_INDEX = {ch: i for i, ch in enumerate(GSM7_BASIC) if i != GSM7_ESCAPE}
GSM7_EXTENSION_INDEX = {ch: code for code, ch in GSM7_EXTENSION.items()}

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# Units per segment: (single message, each part of a concatenated message).
# A concatenated part loses 6 octets to its UDH: 7 septets or 3 UCS-2 units.
LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC_INDEX or ch in GSM7_EXTENSION_INDEX for ch in text)


def gsm7_units(ch: str) -> int:
    """Septets one character takes: extension characters need the escape too."""
    return 2 if ch in GSM7_EXTENSION_INDEX else 1


def ucs2_units(ch: str) -> int:
    """UTF-16 code units: a character outside the BMP is a surrogate pair."""
    return 2 if ord(ch) > 0xFFFF else 1


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str  # GSM7 or UCS2
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    per_segment: int  # capacity of one segment at this length
    remaining: int  # units left in the last segment


def choose_encoding(text: str) -> str:
    return GSM7 if is_gsm7(text) else UCS2


def split_units(text: str, encoding: str | None = None) -> list[str]:
    """Split text into the parts that each go in one segment.

    A character is never split across segments: neither an escape sequence
    nor a surrogate pair may straddle a boundary (receivers show garbage).
    """
    encoding = encoding or choose_encoding(text)
    unit = gsm7_units if encoding == GSM7 else ucs2_units
    single, multi = LIMITS[encoding]
    if sum(unit(ch) for ch in text) <= single:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        size = unit(ch)
        if used + size > multi:
            parts.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += size
    if current:
        parts.append("".join(current))
    return parts


def analyze(text: str) -> SegmentInfo:
    encoding = choose_encoding(text)
    unit = gsm7_units if encoding == GSM7 else ucs2_units
    units = sum(unit(ch) for ch in text)
    single, multi = LIMITS[encoding]
    if units <= single:
        return SegmentInfo(encoding, units, 1 if units else 0, single, single - units)
    parts = split_units(text, encoding)
    last = sum(unit(ch) for ch in parts[-1])
    return SegmentInfo(encoding, units, len(parts), multi, multi - last)


def preview(text: str) -> dict[str, object]:
    return {**asdict(analyze(text)), "characters": len(text)}
