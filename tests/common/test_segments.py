from hypothesis import given
from hypothesis import strategies as st

from smsgw_common.segments import GSM7, GSM7_BASIC, GSM7_EXTENSION, UCS2, analyze, split_units


def test_a_plain_160_character_text_is_one_gsm7_segment():
    info = analyze("a" * 160)
    assert (info.encoding, info.units, info.segments, info.remaining) == (GSM7, 160, 1, 0)


def test_the_161st_character_makes_two_segments_of_153():
    info = analyze("a" * 161)
    assert (info.segments, info.per_segment) == (2, 153)
    assert [len(p) for p in split_units("a" * 161)] == [153, 8]


def test_extension_characters_count_double():
    info = analyze("€" * 80)
    assert (info.encoding, info.units, info.segments) == (GSM7, 160, 1)
    assert analyze("€" * 81).segments == 2


def test_an_escape_sequence_never_straddles_a_segment_boundary():
    text = "a" * 152 + "€" + "b" * 10  # the € would need septets 153 and 154
    parts = split_units(text)
    assert parts[0] == "a" * 152 and parts[1] == "€" + "b" * 10


def test_one_non_gsm_character_switches_to_ucs2():
    info = analyze("hello ç")  # ç (lowercase) is not in GSM 03.38; Ç is
    assert (info.encoding, info.units, info.segments) == (UCS2, 7, 1)
    assert analyze("hello Ç").encoding == GSM7


def test_emoji_outside_the_bmp_take_two_ucs2_units():
    assert analyze("😀" * 35).units == 70
    assert analyze("😀" * 35).segments == 1
    assert analyze("😀" * 36).segments == 2


def test_a_surrogate_pair_never_straddles_a_segment_boundary():
    parts = split_units("x" * 66 + "😀" + "y" * 10)
    assert parts[0] == "x" * 66 and parts[1].startswith("😀")


def test_the_empty_text_has_no_segment():
    assert analyze("").segments == 0


gsm_chars = st.sampled_from([c for i, c in enumerate(GSM7_BASIC) if i != 0x1B] + list(GSM7_EXTENSION.values()))


@given(st.text(gsm_chars, max_size=1000))
def test_gsm7_parts_join_back_and_fit_their_segments(text):
    parts = split_units(text)
    assert "".join(parts) == text
    info = analyze(text)
    assert len(parts) == max(info.segments, 1)
    limit = 160 if len(parts) == 1 else 153
    assert all(sum(2 if c in "^{}\\[~]|€\x0c" else 1 for c in p) <= limit for p in parts)


@given(st.text(max_size=500))
def test_any_text_parts_join_back_and_fit_their_segments(text):
    parts = split_units(text)
    assert "".join(parts) == text
    if analyze(text).encoding == UCS2:
        limit = 70 if len(parts) == 1 else 67
        assert all(len(p.encode("utf-16-le")) // 2 <= limit for p in parts)
