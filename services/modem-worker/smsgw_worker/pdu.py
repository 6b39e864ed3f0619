# Over 500 lines on purpose: one pure codec (TS 23.040), whose encoders and decoders share its field helpers.
"""SMS PDU codec (3GPP TS 23.040 / 23.038), pure functions with no I/O.

Encodes SMS-SUBMIT (what the gateway sends with AT+CMGS) and decodes
SMS-DELIVER, SMS-STATUS-REPORT and SMS-SUBMIT (what a modem hands back from
+CMT, +CDS, +CMGR and +CMGL). Encoders for SMS-DELIVER and SMS-STATUS-REPORT
exist so that the modem emulator and the tests can speak the network's side.

Every hex string with an SMSC part starts with the SMSC address as in
TS 24.011 (`00` meaning "the SIM's default SMSC"), which is the form PDU-mode
AT commands use.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from smsgw_common.segments import (
    GSM7,
    GSM7_BASIC,
    GSM7_BASIC_INDEX,
    GSM7_ESCAPE,
    GSM7_EXTENSION,
    GSM7_EXTENSION_INDEX,
    UCS2,
    choose_encoding,
    split_units,
)

EIGHT_BIT = "8-bit"

# Type-of-number values (TS 23.040 9.1.2.5), as the upper nibble of the TOA
# octet once bit 7 (always 1) is stripped.
TON_UNKNOWN = 0
TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_ALPHANUMERIC = 5

# TP-MTI (TS 23.040 9.2.3.1) for messages as the MS sees them.
MTI_DELIVER = 0
MTI_SUBMIT = 1
MTI_STATUS_REPORT = 2

# BCD semi-octets beyond 0-9 (TS 24.008 table 10.5.118).
_BCD_EXTRA = {0xA: "*", 0xB: "#", 0xC: "a", 0xD: "b", 0xE: "c"}
_BCD_EXTRA_INDEX = {ch: v for v, ch in _BCD_EXTRA.items()}

MAX_ADDRESS_DIGITS = 20  # TP-DA/TP-OA hold at most 10 octets of digits
_NUMERIC = re.compile(r"\+?[0-9*#]+")


class PduError(ValueError):
    """A PDU (or the text/number to encode into one) is malformed or truncated."""


@dataclass(frozen=True)
class SubmitPdu:
    hex: str  # SMSC part + TPDU, ready to write after AT+CMGS=<tpdu_length>
    tpdu_length: int  # octets, not counting the SMSC part (what AT+CMGS wants)
    seq: int  # 1-based part number
    total: int
    text: str  # the slice of the message this part carries


@dataclass(frozen=True)
class Concat:
    ref: int
    total: int
    seq: int


@dataclass(frozen=True)
class Deliver:
    smsc: str | None
    sender: str
    sender_type: str  # 'international' | 'national' | 'alphanumeric' | 'unknown'
    text: str  # '' for 8-bit data
    encoding: str  # 'GSM-7' | 'UCS-2' | '8-bit'
    # Raw user data (without UDH) for 8-bit and UCS-2: a sender that split a
    # surrogate pair across parts can only be repaired by joining bytes.
    data: bytes | None
    scts: datetime
    concat: Concat | None
    status_report_requested: bool = False


@dataclass(frozen=True)
class StatusReport:
    smsc: str | None
    reference: int  # TP-MR of the SMS-SUBMIT this reports on
    recipient: str
    scts: datetime
    discharge: datetime
    status: int  # TP-ST
    delivered: bool
    final: bool  # False while the SMSC is still trying (TP-ST 0x20-0x3F)


@dataclass(frozen=True)
class Submit:
    reference: int
    recipient: str
    text: str
    encoding: str
    concat: Concat | None
    status_report_requested: bool
    validity: int | datetime | None  # minutes (relative), datetime (absolute)
    data: bytes | None = None
    smsc: str | None = None


# --------------------------------------------------------------------------
# Low-level helpers


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PduError(
                f"truncated PDU: {what} needs {n} octets at offset {self.pos}, only {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def octet(self, what: str) -> int:
        return self.take(1, what)[0]

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk


def _from_hex(hex_pdu: str) -> bytes:
    if not isinstance(hex_pdu, str):
        raise PduError(f"PDU must be a hex string, not {type(hex_pdu).__name__}")
    cleaned = "".join(hex_pdu.split())
    if not cleaned:
        raise PduError("empty PDU")
    if len(cleaned) % 2:
        raise PduError(f"PDU has an odd number of hex digits ({len(cleaned)})")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise PduError("PDU is not hexadecimal") from None


def _bcd_decode(octets: bytes, digits: int | None = None) -> str:
    out = []
    for b in octets:
        for nibble in (b & 0x0F, b >> 4):
            if nibble == 0xF:
                continue
            out.append(str(nibble) if nibble < 10 else _BCD_EXTRA[nibble])
    text = "".join(out)
    return text[:digits] if digits is not None else text


def _bcd_encode(digits: str) -> bytes:
    nibbles = [int(ch) if ch.isdigit() else _BCD_EXTRA_INDEX[ch] for ch in digits]
    if len(nibbles) % 2:
        nibbles.append(0xF)
    return bytes(nibbles[i] | (nibbles[i + 1] << 4) for i in range(0, len(nibbles), 2))


def _pack_septets(septets: list[int], fill_bits: int = 0) -> bytes:
    """Pack septets LSB first after `fill_bits` zero bits (TS 23.038 6.1.2.1.1)."""
    total_bits = fill_bits + 7 * len(septets)
    out = bytearray((total_bits + 7) // 8)
    bit = fill_bits
    for s in septets:
        value = s << (bit % 8)
        idx = bit // 8
        out[idx] |= value & 0xFF
        if value > 0xFF:
            out[idx + 1] |= value >> 8
        bit += 7
    return bytes(out)


def _unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    needed = (fill_bits + 7 * count + 7) // 8
    if needed > len(data):
        raise PduError(f"truncated PDU: {count} septets need {needed} octets, got {len(data)}")
    septets = []
    bit = fill_bits
    for _ in range(count):
        idx = bit // 8
        value = data[idx] | (data[idx + 1] << 8 if idx + 1 < len(data) else 0)
        septets.append((value >> (bit % 8)) & 0x7F)
        bit += 7
    return septets


def _gsm7_to_septets(text: str) -> list[int]:
    septets: list[int] = []
    for ch in text:
        if ch in GSM7_BASIC_INDEX:
            septets.append(GSM7_BASIC_INDEX[ch])
        elif ch in GSM7_EXTENSION_INDEX:
            septets += [GSM7_ESCAPE, GSM7_EXTENSION_INDEX[ch]]
        else:
            raise PduError(f"character {ch!r} is not in the GSM 7-bit alphabet")
    return septets


def _septets_to_gsm7(septets: list[int]) -> str:
    out = []
    escaped = False
    for s in septets:
        if escaped:
            # TS 23.038 6.2.1.1: an escape to a code the extension table does
            # not define shows the default-table character instead.
            out.append(GSM7_EXTENSION.get(s, " " if s == GSM7_ESCAPE else GSM7_BASIC[s]))
            escaped = False
        elif s == GSM7_ESCAPE:
            escaped = True
        else:
            out.append(GSM7_BASIC[s])
    return "".join(out)


def _ucs2_bytes(text: str) -> bytes:
    return text.encode("utf-16-be", errors="surrogatepass")


# --------------------------------------------------------------------------
# Addresses


def _parse_number(number: str) -> tuple[int, str]:
    """(TON, digits) of a destination; '+' means international."""
    if not isinstance(number, str):
        raise PduError(f"number must be a string, not {type(number).__name__}")
    cleaned = number.strip()
    for sep in " -().":
        cleaned = cleaned.replace(sep, "")
    ton = TON_UNKNOWN
    if cleaned.startswith("+"):
        ton, cleaned = TON_INTERNATIONAL, cleaned[1:]
    if not cleaned:
        raise PduError(f"number {number!r} has no digits")
    if any(not (ch.isascii() and (ch.isdigit() or ch in "*#")) for ch in cleaned):
        raise PduError(
            f"number {number!r} is not a phone number (digits, optional leading '+'); "
            "alphanumeric addresses cannot be sent to"
        )
    if len(cleaned) > MAX_ADDRESS_DIGITS:
        raise PduError(f"number {number!r} has more than {MAX_ADDRESS_DIGITS} digits")
    return ton, cleaned


def _encode_address(number: str, *, allow_alphanumeric: bool = False) -> bytes:
    """TP-DA/TP-OA/TP-RA: digit count, type of address, BCD digits."""
    if allow_alphanumeric and not _looks_numeric(number):
        if not number or len(number) > 11:
            raise PduError(f"alphanumeric address {number!r} must be 1-11 characters")
        septets = _gsm7_to_septets(number)
        packed = _pack_septets(septets)
        # The length counts useful semi-octets of the packed septets.
        return bytes([(len(septets) * 7 + 3) // 4, 0x80 | (TON_ALPHANUMERIC << 4)]) + packed
    ton, digits = _parse_number(number)
    return bytes([len(digits), 0x80 | (ton << 4) | 0x01]) + _bcd_encode(digits)


def _looks_numeric(number: str) -> bool:
    return _NUMERIC.fullmatch(number) is not None and len(number.lstrip("+")) <= MAX_ADDRESS_DIGITS


def _encode_smsc(smsc: str | None) -> bytes:
    if not smsc:
        return b"\x00"
    ton, digits = _parse_number(smsc)
    body = bytes([0x80 | (ton << 4) | 0x01]) + _bcd_encode(digits)
    return bytes([len(body)]) + body


def _format_number(ton: int, digits: str) -> str:
    return "+" + digits if ton == TON_INTERNATIONAL and digits else digits


def _decode_address(r: _Reader, what: str) -> tuple[str, str]:
    length = r.octet(f"{what} length")
    toa = r.octet(f"{what} type")
    ton = (toa >> 4) & 0x07
    body = r.take((length + 1) // 2, what)
    if ton == TON_ALPHANUMERIC:
        septets = _unpack_septets(body, length * 4 // 7)
        return _septets_to_gsm7(septets), "alphanumeric"
    digits = _bcd_decode(body, length)
    kind = {TON_INTERNATIONAL: "international", TON_NATIONAL: "national"}.get(ton, "unknown")
    return _format_number(ton, digits), kind


def _decode_smsc(r: _Reader) -> str | None:
    length = r.octet("SMSC length")
    if length == 0:
        return None
    body = r.take(length, "SMSC address")
    ton = (body[0] >> 4) & 0x07
    return _format_number(ton, _bcd_decode(body[1:])) or None


# --------------------------------------------------------------------------
# Time stamps and validity


def _swap(b: int) -> int:
    return (b & 0x0F) * 10 + (b >> 4)


def _decode_timestamp(raw: bytes, what: str) -> datetime:
    for b in raw[:6]:
        if (b & 0x0F) > 9 or (b >> 4) > 9:
            raise PduError(f"{what} {raw.hex().upper()} is not BCD")
    yy, mo, dd, hh, mi, ss = (_swap(b) for b in raw[:6])
    tz = raw[6]
    # The sign is bit 3 of the (swapped) tens digit of quarter hours.
    quarters = (tz & 0x07) * 10 + (tz >> 4)
    if tz >> 4 > 9:
        raise PduError(f"{what} time zone {tz:02X} is not BCD")
    offset = timedelta(minutes=15 * quarters) * (-1 if tz & 0x08 else 1)
    # Two-digit years: as POSIX strptime %y, 69-99 are the 1900s.
    year = 1900 + yy if yy >= 69 else 2000 + yy
    try:
        return datetime(year, mo, dd, hh, mi, ss, tzinfo=timezone(offset))
    except ValueError as exc:
        raise PduError(f"{what} {raw.hex().upper()} is not a valid time: {exc}") from None


def _bcd_swapped(value: int) -> int:
    return (value % 10) << 4 | (value // 10)


def _encode_timestamp(when: datetime) -> bytes:
    if when.tzinfo is None:
        raise PduError("time stamps must be timezone-aware")
    if not 1969 <= when.year <= 2068:
        raise PduError(f"year {when.year} cannot be written as a two-digit SMS year")
    offset = when.utcoffset() or timedelta(0)
    quarters = round(offset.total_seconds() / 900)
    if abs(quarters) > 79:
        raise PduError(f"time zone offset {offset} is out of range")
    tz = _bcd_swapped(abs(quarters)) | (0x08 if quarters < 0 else 0)
    fields = (when.year % 100, when.month, when.day, when.hour, when.minute, when.second)
    return bytes(_bcd_swapped(v) for v in fields) + bytes([tz])


def _encode_validity(minutes: int) -> int:
    """Relative TP-VP (TS 23.040 9.2.3.12.1): the smallest period covering `minutes`."""
    if minutes <= 0:
        raise PduError(f"validity must be positive, not {minutes} minutes")
    if minutes <= 720:
        return max(0, -(-minutes // 5) - 1)
    if minutes <= 1440:
        return 143 + -(-(minutes - 720) // 30)
    if minutes <= 30 * 1440:
        return 166 + -(-minutes // 1440)
    return min(255, 192 + -(-minutes // (7 * 1440)))


def _decode_validity(vp: int) -> int:
    if vp <= 143:
        return (vp + 1) * 5
    if vp <= 167:
        return 720 + (vp - 143) * 30
    if vp <= 196:
        return (vp - 166) * 1440
    return (vp - 192) * 7 * 1440


# --------------------------------------------------------------------------
# User data


def _udh_concat(ref: int, total: int, seq: int) -> bytes:
    if ref > 0xFF:
        return bytes([6, 0x08, 4, ref >> 8, ref & 0xFF, total, seq])
    return bytes([5, 0x00, 3, ref, total, seq])


def _encode_user_data(text: str, encoding: str, udh: bytes, data: bytes | None = None) -> tuple[int, bytes]:
    """(TP-UDL, TP-UD) for one part."""
    if encoding == GSM7:
        septets = _gsm7_to_septets(text)
        header_septets = (len(udh) * 8 + 6) // 7
        fill = header_septets * 7 - len(udh) * 8
        udl = header_septets + len(septets)
        if udl > 160:
            raise PduError(f"{udl} septets do not fit in one SMS")
        return udl, udh + _pack_septets(septets, fill)
    body = data if encoding == EIGHT_BIT else _ucs2_bytes(text)
    if body is None:
        raise PduError("8-bit user data needs bytes")
    udl = len(udh) + len(body)
    if udl > 140:
        raise PduError(f"{udl} octets do not fit in one SMS")
    return udl, udh + body


def _dcs_alphabet(dcs: int) -> str:
    """Character set from TP-DCS (TS 23.038 section 4)."""
    group = dcs >> 4
    if group <= 0x7:  # general data coding (00xx) and automatic deletion (01xx)
        if dcs & 0x20:
            raise PduError(f"compressed user data (DCS {dcs:02X}) is not supported")
        return {0: GSM7, 1: EIGHT_BIT, 2: UCS2}.get((dcs >> 2) & 0x03, GSM7)
    if group in (0xC, 0xD):  # message waiting, discard/store: default alphabet
        return GSM7
    if group == 0xE:  # message waiting, store, UCS-2
        return UCS2
    if group == 0xF:
        return EIGHT_BIT if dcs & 0x04 else GSM7
    return GSM7  # reserved groups are to be read as the default alphabet


def _parse_udh(udh: bytes) -> Concat | None:
    concat = None
    i = 0
    while i + 2 <= len(udh):
        iei, length = udh[i], udh[i + 1]
        value = udh[i + 2 : i + 2 + length]
        if len(value) != length:
            raise PduError(f"user data header element {iei:02X} is truncated")
        if iei == 0x00 and length == 3:
            ref, total, seq = value
        elif iei == 0x08 and length == 4:
            ref, total, seq = (value[0] << 8) | value[1], value[2], value[3]
        else:
            i += 2 + length
            continue
        # TS 23.040 9.2.3.24.1: a zero count or an out-of-range sequence
        # number makes the element one to ignore.
        if total and 1 <= seq <= total:
            concat = Concat(ref, total, seq)
        i += 2 + length
    if i != len(udh):
        raise PduError("user data header is truncated")
    return concat


def _decode_user_data(r: _Reader, dcs: int, udhi: bool) -> tuple[str, str, bytes | None, Concat | None]:
    encoding = _dcs_alphabet(dcs)
    udl = r.octet("TP-UDL")
    left = len(r.data) - r.pos
    if udl == 0:
        # TP-UDHI with no user data at all (seen from real SMSCs): there is
        # no header to read, and an empty message is still a message.
        udhi = False
    if encoding != GSM7 and udl > left and (udl * 7 + 7) // 8 <= left:
        # A DCS with reserved bits whose declared length only fits septets:
        # the sender meant the default alphabet (TS 23.038 4: reserved
        # values are to be read as GSM 7-bit).
        encoding = GSM7
    if encoding == GSM7:
        ud = r.take((udl * 7 + 7) // 8, "TP-UD")
        concat = None
        header_septets = 0
        fill = 0
        body = ud
        if udhi:
            if not ud:
                raise PduError("TP-UDHI is set but there is no user data")
            udhl = ud[0]
            header = ud[1 : 1 + udhl]
            if len(header) != udhl:
                raise PduError("user data header is truncated")
            concat = _parse_udh(header)
            header_septets = ((udhl + 1) * 8 + 6) // 7
            if header_septets > udl:
                raise PduError("user data header is longer than TP-UDL")
            fill = header_septets * 7 - (udhl + 1) * 8
            body = ud[udhl + 1 :]
        septets = _unpack_septets(body, udl - header_septets, fill)
        return _septets_to_gsm7(septets), GSM7, None, concat
    ud = r.take(udl, "TP-UD")
    concat = None
    if udhi:
        if not ud:
            raise PduError("TP-UDHI is set but there is no user data")
        udhl = ud[0]
        if udhl + 1 > len(ud):
            raise PduError("user data header is truncated")
        concat = _parse_udh(ud[1 : 1 + udhl])
        ud = ud[udhl + 1 :]
    if encoding == UCS2:
        # Replacement rather than failure: a lone surrogate from a sender that
        # split a pair must not cost the rest of the message (data keeps it).
        text = ud.decode("utf-16-be", errors="replace")
        return text, UCS2, ud, concat
    return "", EIGHT_BIT, ud, concat


# --------------------------------------------------------------------------
# Public encoders


def encode_submit(
    number: str,
    text: str,
    *,
    request_status_report: bool = True,
    validity_minutes: int | None = None,
    concat_ref: int | None = None,
    smsc: str | None = None,
) -> list[SubmitPdu]:
    """SMS-SUBMIT PDUs for `text`, one per segment.

    Multipart messages carry an 8-bit-reference concatenation UDH; without
    `concat_ref` a random reference is chosen.
    """
    if not isinstance(text, str):
        raise PduError(f"text must be a string, not {type(text).__name__}")
    da = _encode_address(number)
    if validity_minutes is not None:
        vp = bytes([_encode_validity(validity_minutes)])
    else:
        vp = b""
    encoding = choose_encoding(text)
    parts = split_units(text, encoding)
    total = len(parts)
    if total > 255:
        raise PduError(f"text needs {total} segments; at most 255 can be concatenated")
    if concat_ref is None:
        concat_ref = random.randrange(256)
    elif not 0 <= concat_ref <= 255:
        raise PduError(f"concat_ref must be 0-255, not {concat_ref}")
    sca = _encode_smsc(smsc)
    dcs = 0x00 if encoding == GSM7 else 0x08
    out = []
    for seq, part in enumerate(parts, start=1):
        udh = _udh_concat(concat_ref, total, seq) if total > 1 else b""
        udl, ud = _encode_user_data(part, encoding, udh)
        first = 0x01  # TP-MTI SMS-SUBMIT; TP-RD 0; TP-RP 0
        if vp:
            first |= 0x10  # TP-VPF relative
        if request_status_report:
            first |= 0x20
        if udh:
            first |= 0x40
        # TP-MR 0: the modem assigns the reference and returns it in +CMGS.
        tpdu = bytes([first, 0x00]) + da + bytes([0x00, dcs]) + vp + bytes([udl]) + ud
        out.append(SubmitPdu((sca + tpdu).hex().upper(), len(tpdu), seq, total, part))
    return out


def encode_deliver(
    sender: str,
    text: str,
    *,
    scts: datetime,
    concat: Concat | None = None,
    concat_ref: int | None = None,
    smsc: str | None = None,
    encoding: str | None = None,
    data: bytes | None = None,
    status_report_indication: bool = False,
) -> list[str]:
    """SMS-DELIVER PDUs (with SMSC part) as a network would hand them to a modem.

    With `concat`, `text` is exactly one part and gets that UDH (a 16-bit
    reference when ref > 255); otherwise the text is split like a submit.
    `encoding=EIGHT_BIT` sends `data` as 8-bit data.
    """
    oa = _encode_address(sender, allow_alphanumeric=True)
    sca = _encode_smsc(smsc)
    ts = _encode_timestamp(scts)
    if data is not None:
        encoding = EIGHT_BIT
    encoding = encoding or choose_encoding(text)
    dcs = {GSM7: 0x00, UCS2: 0x08, EIGHT_BIT: 0x04}.get(encoding)
    if dcs is None:
        raise PduError(f"unknown encoding {encoding!r}")
    if concat is not None:
        headers = [(_udh_concat(concat.ref, concat.total, concat.seq), text, data)]
    elif encoding == EIGHT_BIT:
        headers = [(b"", "", data)]
    else:
        parts = split_units(text, encoding)
        ref = random.randrange(256) if concat_ref is None else concat_ref
        headers = [
            (_udh_concat(ref, len(parts), i) if len(parts) > 1 else b"", p, None) for i, p in enumerate(parts, start=1)
        ]
    out = []
    for udh, part, payload in headers:
        udl, ud = _encode_user_data(part, encoding, udh, payload)
        first = 0x04  # TP-MTI SMS-DELIVER, TP-MMS "no more messages waiting"
        if status_report_indication:
            first |= 0x20
        if udh:
            first |= 0x40
        tpdu = bytes([first]) + oa + bytes([0x00, dcs]) + ts + bytes([udl]) + ud
        out.append((sca + tpdu).hex().upper())
    return out


def encode_status_report(
    reference: int,
    recipient: str,
    status: int,
    scts: datetime,
    discharge: datetime,
    *,
    smsc: str | None = None,
) -> str:
    """SMS-STATUS-REPORT PDU (with SMSC part) for the submit with TP-MR `reference`."""
    if not 0 <= reference <= 255:
        raise PduError(f"reference must be 0-255, not {reference}")
    if not 0 <= status <= 255:
        raise PduError(f"status must be 0-255, not {status}")
    tpdu = (
        bytes([0x06, reference])  # TP-MTI status report, TP-MMS
        + _encode_address(recipient)
        + _encode_timestamp(scts)
        + _encode_timestamp(discharge)
        + bytes([status])
    )
    return (_encode_smsc(smsc) + tpdu).hex().upper()


# --------------------------------------------------------------------------
# Public decoder


def status_is_delivered(status: int) -> bool:
    """TP-ST 0x00-0x1F: the short message transaction completed."""
    return status < 0x20


def status_is_final(status: int) -> bool:
    """TP-ST 0x20-0x3F is a temporary error the SMSC is still retrying."""
    return not 0x20 <= status < 0x40


def cbs_alphabet(dcs: int) -> tuple[str, bool]:
    """Alphabet of a USSD/cell broadcast DCS (TS 23.038 section 5), and whether
    the text starts with a language indication (DCS 0x10/0x11)."""
    group = dcs >> 4
    if group in (0x0, 0x2, 0x3):  # a language in the DCS itself; GSM 7-bit
        return GSM7, False
    if group == 0x1:
        return (UCS2 if dcs & 0x0F == 0x01 else GSM7), dcs & 0x0F in (0x00, 0x01)
    if 0x4 <= group <= 0x7:  # general data coding, as for SMS
        return {0: GSM7, 1: EIGHT_BIT, 2: UCS2}.get((dcs >> 2) & 0x03, GSM7), False
    if group == 0x9:  # message with user data header: alphabet as group 01xx
        return {0: GSM7, 1: EIGHT_BIT, 2: UCS2}.get((dcs >> 2) & 0x03, GSM7), False
    if group == 0xF:
        return (EIGHT_BIT if dcs & 0x04 else GSM7), False
    return GSM7, False  # reserved: the default alphabet


def pack_gsm7(text: str) -> bytes:
    """Text as packed GSM 7-bit (what some modems show as hex in +CUSD)."""
    return _pack_septets(_gsm7_to_septets(text))


def unpack_gsm7(data: bytes) -> str:
    """Packed GSM 7-bit octets to text. Seven spare bits at the end are
    padding (TS 23.038 6.1.2.3.1: CR there), not a character."""
    count = len(data) * 8 // 7
    septets = _unpack_septets(data, count)
    if count and len(data) * 8 % 7 == 0 and septets[-1] in (0x00, 0x0D):
        septets.pop()
    return _septets_to_gsm7(septets)


def message_type(hex_pdu: str, *, with_smsc: bool = True) -> int | None:
    """TP-MTI alone (MTI_DELIVER, MTI_SUBMIT, ...), for a PDU `decode` rejects;
    None when not even the first octet can be found."""
    try:
        data = _from_hex(hex_pdu)
    except PduError:
        return None
    at = data[0] + 1 if with_smsc and data else 0
    return data[at] & 0x03 if at < len(data) else None


def decode(hex_pdu: str, *, with_smsc: bool = True) -> Deliver | StatusReport | Submit:
    """Decode a PDU as a modem reports it (+CMT, +CDS, +CMGR, +CMGL)."""
    r = _Reader(_from_hex(hex_pdu))
    smsc = _decode_smsc(r) if with_smsc else None
    first = r.octet("first octet")
    mti = first & 0x03
    udhi = bool(first & 0x40)
    if mti == MTI_DELIVER:
        sender, kind = _decode_address(r, "TP-OA")
        r.octet("TP-PID")
        dcs = r.octet("TP-DCS")
        scts = _decode_timestamp(r.take(7, "TP-SCTS"), "TP-SCTS")
        text, encoding, data, concat = _decode_user_data(r, dcs, udhi)
        return Deliver(smsc, sender, kind, text, encoding, data, scts, concat, bool(first & 0x20))
    if mti == MTI_STATUS_REPORT:
        reference = r.octet("TP-MR")
        recipient, _ = _decode_address(r, "TP-RA")
        scts = _decode_timestamp(r.take(7, "TP-SCTS"), "TP-SCTS")
        discharge = _decode_timestamp(r.take(7, "TP-DT"), "TP-DT")
        status = r.octet("TP-ST")
        # Optional TP-PI and what it announces (TS 23.040 9.2.2.3) carry
        # nothing the gateway uses.
        return StatusReport(
            smsc,
            reference,
            recipient,
            scts,
            discharge,
            status,
            status_is_delivered(status),
            status_is_final(status),
        )
    if mti == MTI_SUBMIT:
        reference = r.octet("TP-MR")
        recipient, _ = _decode_address(r, "TP-DA")
        r.octet("TP-PID")
        dcs = r.octet("TP-DCS")
        vpf = (first >> 3) & 0x03
        validity: int | datetime | None = None
        if vpf == 2:
            validity = _decode_validity(r.octet("TP-VP"))
        elif vpf == 3:
            validity = _decode_timestamp(r.take(7, "TP-VP"), "TP-VP")
        elif vpf == 1:
            r.take(7, "TP-VP")  # enhanced format: nothing the gateway reads
        text, encoding, data, concat = _decode_user_data(r, dcs, udhi)
        return Submit(
            reference,
            recipient,
            text,
            encoding,
            concat,
            bool(first & 0x20),
            validity,
            data if encoding == EIGHT_BIT else None,
            smsc,
        )
    raise PduError(f"reserved message type indicator in first octet {first:02X}")
