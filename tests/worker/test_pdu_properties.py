"""Round trips of the PDU codec over every GSM-7 text and arbitrary Unicode."""

import re
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw_common.segments import GSM7_BASIC, GSM7_EXTENSION, LIMITS, choose_encoding
from smsgw_worker.pdu import Concat, decode, encode_deliver, encode_submit

GSM7_CHARS = [ch for ch in GSM7_BASIC if ch != "\x1b"] + list(GSM7_EXTENSION.values())
gsm7_text = st.text(alphabet=GSM7_CHARS, max_size=700)
# Surrogate code points cannot be in a str a client sends (not valid UTF-8).
unicode_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300)
numbers = st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True)


def roundtrip(number: str, text: str, ref: int) -> None:
    pdus = encode_submit(number, text, concat_ref=ref)
    decoded = [decode(p.hex) for p in pdus]
    assert "".join(d.text for d in decoded) == text
    assert all(d.recipient == number for d in decoded)
    assert all(d.encoding == choose_encoding(text) for d in decoded)
    _single, _multi = LIMITS[choose_encoding(text)]
    if len(pdus) == 1:
        assert decoded[0].concat is None
    else:
        assert [d.concat for d in decoded] == [Concat(ref, len(pdus), i) for i in range(1, len(pdus) + 1)]
    for p in pdus:
        assert p.tpdu_length == len(p.hex) // 2 - 1  # SMSC part is the single 00
        assert p.tpdu_length <= 140 + 2 + 12 + 2 + 1  # UD + header fields at most


@settings(max_examples=300, deadline=None)
@given(numbers, gsm7_text, st.integers(0, 255))
def test_every_gsm7_text_round_trips_through_submit_pdus(number, text, ref):
    roundtrip(number, text, ref)


@settings(max_examples=300, deadline=None)
@given(numbers, unicode_text, st.integers(0, 255))
def test_any_unicode_text_round_trips_through_submit_pdus(number, text, ref):
    roundtrip(number, text, ref)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        numbers,
        st.text(alphabet=GSM7_CHARS, min_size=1, max_size=11).filter(lambda s: re.fullmatch(r"\+?[0-9*#]+", s) is None),
    ),
    st.one_of(gsm7_text, unicode_text),
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2068, 12, 31),
        timezones=st.integers(-48, 56).map(lambda q: timezone(timedelta(minutes=15 * q))),
    ),
)
def test_deliver_pdus_round_trip_sender_text_and_time(sender, text, when):
    when = when.replace(microsecond=0)
    pdus = encode_deliver(sender, text, scts=when, smsc="+15550000000")
    decoded = [decode(p) for p in pdus]
    assert "".join(d.text for d in decoded) == text
    assert {d.scts for d in decoded} == {when}
    assert {d.smsc for d in decoded} == {"+15550000000"}
    assert {d.sender for d in decoded} == {sender}
