"""The PDU codec against published vectors, each with its origin noted."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from smsgw_worker.pdu import (
    Concat,
    Deliver,
    PduError,
    StatusReport,
    Submit,
    decode,
    encode_deliver,
    encode_status_report,
    encode_submit,
)


def tz(hours: float) -> timezone:
    return timezone(timedelta(hours=hours))


# --- SMS-SUBMIT encoding ------------------------------------------------------


def test_it_encodes_the_classic_hellohello_submit():
    # "SMS and the PDU format" (dreamfabric.com/sms, Lars Pettersson), the
    # example every tutorial copies: to +46708251358, validity AA (4 days).
    [pdu] = encode_submit("+46708251358", "hellohello", request_status_report=False, validity_minutes=4 * 24 * 60)
    assert pdu.hex == "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"
    assert pdu.tpdu_length == 23  # octets after the SMSC part, for AT+CMGS
    assert (pdu.seq, pdu.total, pdu.text) == (1, 1, "hellohello")


def test_it_encodes_a_submit_without_validity_period():
    # python-gsmmodem test/test_pdu.py test_encodeSmsSubmit, first case.
    [pdu] = encode_submit("+27820001111", "Hello World!", request_status_report=False)
    assert pdu.hex == "0001000B917228001011F100000CC8329BFD065DDF72363904"


def test_it_encodes_ucs2_with_an_explicit_smsc_and_weeks_of_validity():
    # python-gsmmodem test/test_pdu.py test_encodeSmsSubmit, second case
    # (52 weeks of validity is TP-VP F4).
    [pdu] = encode_submit(
        "+123456789",
        "世界您好！",
        request_status_report=False,
        validity_minutes=52 * 7 * 24 * 60,
        smsc="+44000000000",
    )
    assert pdu.hex == "07914400000000F01100099121436587F90008F40A4E16754C60A8597DFF01"
    assert pdu.tpdu_length == len(pdu.hex) // 2 - 8


def test_it_packs_concatenated_gsm7_parts_with_fill_bits_like_others_do():
    # python-gsmmodem test/test_pdu.py test_encodeSmsSubmit_concatenated: three
    # parts with UDH 050003000301.. (reference 0). That library also sets
    # TP-RD (first octet 45); we leave it clear (41), everything after is equal.
    text = (
        "Lorem ipsum dolor sit amet, consectetur adipisicing elit, sed do eiusmod tempor "
        "incididunt ut labore et dolore magna aliqua.Ut enim ad minim veniam, quinostrud "
        "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.Duis aute irure "
        "dolor in reprehenderit in voluptate velit esse cillum doloe eu fugiat nulla pariatur."
        "Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt "
        "mollit anim id est laborum"
    )
    expected = [
        (
            "0045000B915121551532F40000A0050003000301986F79B90D4AC3E7F53688FC66BFE5A0799A0E0AB7CB7416"
            "68FC76CFCB637A995E9783C2E4343C3D4F8FD3EE33A8CC4ED359A079990C22BF41E5747DDE7E9341F4721BFE"
            "9683D2EE719A9C26D7DD74509D0E6287C56F791954A683C86FF65B5E06B5C36777181466A7E3F5B0AB4A0795"
            "DDE936284C06B5D3EE741B642FBBD3E1360B14AFA7DD"
        ),
        (
            "0045000B915121551532F40000A0050003000302DE73BABC4E0695F165F9384D0FD3D36F37A8CE6687DBE337"
            "881D16BFE5E939C89D9EA741753A28CC4EC7EB6938A88C0795C3A0F1BBDD7E93DFA0F1DB3D2FC7EB61BA8B58"
            "4FCF41E13ABD0C4ACBEBF23288FC66BFE5A0B41B242FC3E56574D94D2ECBD37450DA0DB2BFD975383D4C2F83"
            "EC65769A0E2ACFE765D038CD66D7DB20F29BFD2E83CA"
        ),
        (
            "0045000B915121551532F400008C050003000303EA2073FD9C0ED341EE3A9B1D06C1C3F274985E97BB8AF871"
            "194E2FD7E5A079DA4D07BDC7E370791CA683C675789A1CA687E920F7DB0D82CBDF6972D94D6781E675371D94"
            "7683C675363C0C8AD7D3A0B7D99C1EA7C32072795E96D7DD7450FBCD66A7E9A0B03BDD06A5C9A0F29C0E6287"
            "C56F79BD0D"
        ),
    ]
    pdus = encode_submit("+15125551234", text, request_status_report=False, concat_ref=0)
    assert [p.hex[4:] for p in pdus] == [e[4:] for e in expected]
    assert [p.hex[:4] for p in pdus] == ["0041"] * 3
    assert [(p.seq, p.total) for p in pdus] == [(1, 3), (2, 3), (3, 3)]
    assert "".join(p.text for p in pdus) == text


def test_it_asks_for_a_status_report_by_default():
    [pdu] = encode_submit("+15550001111", "hi")
    assert int(pdu.hex[2:4], 16) & 0x20
    assert decode(pdu.hex).status_report_requested is True


def test_a_single_segment_has_no_udh():
    [pdu] = encode_submit("+15550001111", "a" * 160)
    assert not int(pdu.hex[2:4], 16) & 0x40
    assert decode(pdu.hex).concat is None


def test_an_escape_sequence_never_straddles_parts():
    text = "a" * 152 + "€" + "b" * 10
    first, second = encode_submit("+15550001111", text, concat_ref=9)
    assert first.text == "a" * 152 and second.text == "€" + "b" * 10
    assert decode(first.hex).text == "a" * 152
    assert decode(second.hex).concat == Concat(9, 2, 2)


def test_an_emoji_is_a_surrogate_pair_and_is_never_split():
    text = "x" * 66 + "😀" + "y" * 10  # the emoji would take units 67 and 68
    first, second = encode_submit("+15550001111", text)
    assert first.text == "x" * 66 and second.text.startswith("😀")
    d = decode(second.hex)
    assert d.encoding == "UCS-2" and d.text == "😀" + "y" * 10
    # A surrogate pair on the wire: D83D DE00.
    assert "D83DDE00" in second.hex


def test_a_70_unit_ucs2_text_fits_one_segment_and_71_needs_two():
    assert len(encode_submit("+1555", "ж" * 70)) == 1
    two = encode_submit("+1555", "ж" * 71)
    assert [len(p.text) for p in two] == [67, 4]
    assert all(p.tpdu_length <= 140 + 13 for p in two)


def test_a_national_number_has_type_unknown_and_keeps_its_digits():
    [pdu] = encode_submit("0701234567", "hi")
    d = decode(pdu.hex)
    assert d.recipient == "0701234567"
    assert pdu.hex[8:10] == "81"


@pytest.mark.parametrize(
    "minutes, vp",
    [(5, 0x00), (30, 0x05), (720, 0x8F), (16 * 60, 151), (3 * 1440, 169), (35 * 1440, 197)],
)
def test_it_encodes_relative_validity_periods(minutes, vp):
    # TS 23.040 9.2.3.12.1; the 30 min/16 h/3 d/5 w pairs are from
    # python-gsmmodem test/test_pdu.py TestRelativeValidityPeriod.
    [pdu] = encode_submit("+1555", "x", validity_minutes=minutes)
    assert decode(pdu.hex).validity == minutes
    assert int(pdu.hex[2:4], 16) & 0x18 == 0x10
    assert pdu.hex[18:20] == f"{vp:02X}"  # after SMSC, first octet, MR, DA, PID, DCS


@pytest.mark.parametrize(
    "number",
    ["ACME", "", "+", "12ab", "+1 555 HELLO", "1" * 21],
)
def test_it_refuses_destinations_that_are_not_phone_numbers(number):
    with pytest.raises(PduError):
        encode_submit(number, "hi")


def test_it_refuses_a_concat_reference_out_of_range():
    with pytest.raises(PduError, match="concat_ref"):
        encode_submit("+1555", "a" * 200, concat_ref=256)


def test_it_refuses_a_zero_validity():
    with pytest.raises(PduError, match="validity"):
        encode_submit("+1555", "hi", validity_minutes=0)


def test_formatting_in_a_number_is_ignored():
    [pdu] = encode_submit("+1 (555) 000-1111", "hi")
    assert decode(pdu.hex).recipient == "+15550001111"


# --- SMS-DELIVER decoding -----------------------------------------------------


def test_it_decodes_the_classic_hellohello_deliver():
    # dreamfabric.com/sms: SMSC +27381000015, sender 27838890001 with TOA C8
    # (subscriber number, national plan), time zone +2 h.
    d = decode("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37")
    assert isinstance(d, Deliver)
    assert d.smsc == "+27381000015"
    assert (d.sender, d.sender_type) == ("27838890001", "unknown")
    assert d.text == "hellohello" and d.encoding == "GSM-7" and d.concat is None
    assert d.scts == datetime(1999, 3, 29, 15, 16, 59, tzinfo=tz(2))


def test_it_decodes_how_are_you():
    # developershome.com "SMS tutorial" / many vendor pages: read from a modem,
    # "How are you?" from +31641600986 via SMSC +31624000000. Its time zone
    # octet 08 has the sign bit set and zero quarters: UTC by TS 23.040.
    d = decode("07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07")
    assert (d.smsc, d.sender, d.sender_type) == ("+31624000000", "+31641600986", "international")
    assert d.text == "How are you?"
    assert d.scts == datetime(2002, 8, 26, 19, 37, 41, tzinfo=UTC)


def test_it_decodes_a_deliver_with_extension_characters():
    # python-gsmmodem test/test_pdu.py test_decode, third case.
    d = decode("06917228195339040B917228214365F70000313062315352800A800D8A5E98D337A910")
    assert d.text == "@{tést}!"
    assert d.smsc == "+2782913593" and d.sender == "+27821234567"


def test_it_decodes_a_positive_time_zone_of_eight_hours():
    # python-gsmmodem test/test_pdu.py test_decode, second case (Hong Kong).
    d = decode(
        "07915892000000F0040B915892214365F700007040213252242331493A283D0795C3F33C88FE06C9CB61"
        "32885EC6D341EDF27C1E3E97E7207B3A0C0A5241E377BB1D7693E72E"
    )
    assert d.text == "It is easy to read text messages via AT commands."
    assert d.scts == datetime(2007, 4, 12, 23, 25, 42, tzinfo=tz(8))


def test_it_decodes_a_negative_time_zone():
    # python-gsmmodem TestTimestamp: 7040213252242B is 2007-04-12 23:25:42 -08:00.
    [hexpdu] = encode_deliver("+1555", "x", scts=datetime(2007, 4, 12, 23, 25, 42, tzinfo=tz(-8)))
    assert "7040213252242B" in hexpdu
    assert decode(hexpdu).scts.utcoffset() == timedelta(hours=-8)


def test_it_decodes_a_concatenated_part_with_fill_bits():
    # Gammu tests/sms-concat-deliver (part 1 of 8, reference 0x63, 160 septets
    # with a 6-octet UDH so one fill bit precedes the text).
    d = decode(
        "07918497900000F6400B918406290000F4000002219221351140A005000363080140CCB7BCDC06A5E1F37A"
        "1B447EB3DF72D03C4D0785DB653A0B347EBBE7E531BD4CAFCB4161721A9E9E8FD3EE33A8CC4ED35D2068"
        "99CD2EBBE9E579BC5E06D9D3F47019E42EC7EB6550F95C9ED3C37316C81CAE8FD3E2FA1C5496BFE7A0B4"
        "9B054A87C775767A0E4AC3E7F5B60B34ADCFE16537393D9F9741E4F4D99D9ECFD36D10FC2DA7D3D3"
    )
    assert d.concat == Concat(ref=0x63, total=8, seq=1)
    assert d.smsc == "+48790900006" and d.sender == "+48609200004"
    assert len(d.text) == 153
    assert d.text.startswith(" Lorem ipsum dolor sit amet, consectetur adipiscing elit.")
    assert d.text.endswith("Suspendisse dignissim portti")


def test_it_decodes_a_one_part_concatenation_from_a_short_code():
    # python-gsmmodem test/test_pdu.py test_decode (South African airtime
    # notice from short code 2781188, national/unknown type, UDH 0003C30101).
    d = decode(
        "0591721891F1400781721881F800003160526104848059050003C30101916536FB1DCABEEB2074D85E06"
        "4941B19CAB060319A5C522289C96D3D3ED32286C0FA7D96131BBEC024941B19CAB0603DDD36C36A88C87"
        "A7E565D0DB0D82C55EB0DB4B068BCD5C20"
    )
    assert d.sender == "2781188" and d.smsc == "+2781191"
    assert d.text == "Hello!You have R 19.50 FREE airtime available. R 19.50 will expire on 01/07/2013. "
    assert d.concat == Concat(0xC3, 1, 1)


@pytest.mark.parametrize(
    "address_hex, name",
    [
        # python-gsmmodem TestSmsPduAddressFields: alphanumeric senders.
        ("06D061F118", "abc"),
        ("0ED04669D0397C26A7", "FRANCOIS"),
        ("14D0E10D6FE3DBA036A94D19", "a[]{}€"),
    ],
)
def test_it_decodes_alphanumeric_senders(address_hex, name):
    pdu = "00" + "04" + address_hex + "0000" + "52114290000000" + "0141"
    d = decode(pdu)
    assert (d.sender, d.sender_type) == (name, "alphanumeric")
    assert d.text == "A"


def test_it_decodes_a_national_sender():
    # python-gsmmodem TestSmsPduAddressFields: TOA A1 is a national number.
    d = decode("00" + "04" + "0AA11092997856" + "0000" + "52114290000000" + "0141")
    assert (d.sender, d.sender_type) == ("0129998765", "national")


def test_it_decodes_a_sixteen_bit_concatenation_reference():
    # UDH element 08 04 0180 04 02: reference 384, part 2 of 4 (the element
    # from python-gsmmodem TestUdhConcatenation), here in a UCS-2 deliver.
    udh = "060804018004" + "02"
    body = "306F3044"  # はい
    pdu = "00" + "40" + "0B915121551532F4" + "0008" + "52114290000000" + "0B" + udh + body
    d = decode(pdu)
    assert d.concat == Concat(384, 4, 2)
    assert d.text == "はい" and d.encoding == "UCS-2"


def test_it_decodes_eight_bit_data():
    # python-gsmmodem test/test_pdu.py test_decode ("8-bit data coding" submit).
    s = decode("0591721891F101000B917228214365F700040C48656C6C6F20776F726C6421")
    assert isinstance(s, Submit)
    assert s.encoding == "8-bit" and s.data == b"Hello world!" and s.text == ""
    [hexpdu] = encode_deliver("+1555", "", scts=datetime(2024, 1, 1, tzinfo=UTC), data=b"\x00\xff\x10")
    d = decode(hexpdu)
    assert (d.encoding, d.data, d.text) == ("8-bit", b"\x00\xff\x10", "")


def test_it_decodes_ucs2_with_an_emoji_outside_the_bmp():
    [hexpdu] = encode_deliver("+1555", "Hi 😀👍🏽", scts=datetime(2024, 1, 1, tzinfo=UTC))
    d = decode(hexpdu)
    assert d.text == "Hi 😀👍🏽" and d.encoding == "UCS-2"


def test_a_lone_surrogate_from_a_bad_sender_is_replaced_not_fatal():
    pdu = "00" + "04" + "0B915121551532F4" + "0008" + "52114290000000" + "04" + "0041D83D"
    d = decode(pdu)
    assert d.text == "A\ufffd"
    assert d.data == bytes.fromhex("0041D83D")


def test_an_undefined_extension_code_shows_the_default_character():
    # TS 23.038 6.2.1.1: ESC followed by a code without an extension gives
    # the default-alphabet character of that code. Septets 1B 41 pack into 9B 20.
    d = decode("00" + "04" + "0B915121551532F4" + "0000" + "52114290000000" + "02" + "9B20")
    assert d.text == "A"


# --- SMS-SUBMIT decoding (stored sent messages, +CMGL=4) -------------------------


def test_it_decodes_a_stored_submit_with_relative_validity():
    # python-gsmmodem test/test_pdu.py test_decode (diafaan.com example).
    s = decode("07911326040000F0310D0B911326880736F40000A90FF7FBDD454E87CDE1B0DB357EB701")
    assert isinstance(s, Submit)
    assert s.smsc == "+31624000000" and s.recipient == "+31628870634"
    assert s.reference == 13 and s.validity == 3 * 1440 and s.text == "www.diafaan.com"
    assert s.status_report_requested is True


def test_it_decodes_a_submit_with_absolute_validity():
    # python-gsmmodem test/test_pdu.py: absolute validity period.
    s = decode("0019000B917228001011F100003170013193008017D474BB3CA787DB70903DCC4E93D3F43C885E9ED301")
    assert s.text == "Timestamp validity test"
    assert s.validity == datetime(2013, 7, 10, 13, 39, tzinfo=tz(2))


def test_it_decodes_a_ucs2_submit():
    # python-gsmmodem test/test_pdu.py test_decode ("Valid UCS-2 PDU").
    s = decode("07914346466554F601000B914316565811F9000806304253F68449")
    assert (s.recipient, s.text, s.encoding) == ("+34616585119", "あ叶葉", "UCS-2")


# --- SMS-STATUS-REPORT ------------------------------------------------------------


def test_it_decodes_a_status_report():
    # diafaan.com example via python-gsmmodem test_decode: reference 214 (D6).
    r = decode("0006D60B911326880736F4111011719551401110117195714000")
    assert isinstance(r, StatusReport)
    assert r.reference == 214 and r.recipient == "+31628870634"
    assert r.scts == datetime(2011, 1, 11, 17, 59, 15, tzinfo=tz(1))
    assert r.discharge == datetime(2011, 1, 11, 17, 59, 17, tzinfo=tz(1))
    assert (r.status, r.delivered, r.final) == (0, True, True)


@pytest.mark.parametrize(
    "status, delivered, final",
    [
        (0x00, True, True),  # received by the SME
        (0x01, True, True),  # forwarded, delivery unconfirmed
        (0x20, False, False),  # congestion, still trying
        (0x30, False, False),
        (0x41, False, True),  # incompatible destination
        (0x60, False, True),  # congestion, gave up
    ],
)
def test_status_values_map_to_delivered_and_final(status, delivered, final):
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=tz(5.5))
    r = decode(encode_status_report(255, "+15550001111", status, now, now + timedelta(seconds=3)))
    assert (r.status, r.delivered, r.final) == (status, delivered, final)
    assert r.reference == 255 and r.recipient == "+15550001111"
    assert r.scts == now and r.discharge == now + timedelta(seconds=3)


def test_a_status_report_with_trailing_parameters_decodes():
    # TS 23.040 9.2.2.3: TP-PI and the fields it announces may follow TP-ST.
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    r = decode(encode_status_report(7, "+1555", 0, now, now) + "00")
    assert r.reference == 7 and r.delivered


# --- malformed input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0",
        "zz",
        "07917283010010",  # SMSC announced, nothing after it
        "0004",  # deliver with no address
        "00040B915121551532",  # address cut short
        "00040B915121551532F400005211429000",  # time stamp cut short
        "00040B915121551532F40000521142900000000A41",  # 10 septets announced, 1 octet there
        # python-gsmmodem test_decode: "User data length is invalid in this PDU (too long)".
        "0041010C910661345542F60008A0050003000301306F3044",
        "0003",  # reserved message type
        "00040B915121551532F40000991399000000000141",  # month 13
        "00440B915121551532F4000052114290000000020500",  # UDH longer than the data
    ],
)
def test_it_rejects_malformed_pdus_with_a_clear_error(bad):
    with pytest.raises(PduError):
        decode(bad)


def test_a_pdu_without_smsc_part_decodes_when_told():
    [pdu] = encode_submit("+15550001111", "hi")
    s = decode(pdu.hex[2:], with_smsc=False)
    assert s.recipient == "+15550001111" and s.smsc is None


def test_pdu_error_is_a_value_error():
    with pytest.raises(ValueError):
        decode("XYZ")


def test_encode_deliver_needs_an_aware_timestamp():
    with pytest.raises(PduError, match="timezone"):
        encode_deliver("+1555", "x", scts=datetime(2024, 1, 1))


def test_encode_deliver_with_a_given_concat_emits_that_part():
    [hexpdu] = encode_deliver("+1555", "part two", scts=datetime(2024, 1, 1, tzinfo=UTC), concat=Concat(300, 3, 2))
    d = decode(hexpdu)
    assert d.concat == Concat(300, 3, 2) and d.text == "part two"
