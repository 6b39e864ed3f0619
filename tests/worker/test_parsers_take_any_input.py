"""Whatever bytes a modem (or line noise) produces, the parsers answer with a
value or their documented error, never another exception: the PDU decoder
raises only PduError, the unsolicited-line handler turns anything into an
event, and the stored-message, USSD and storage parsers return what they can
read. The serial link reads the port as latin-1, so every line is made of
code points 0-255 (which include non-ASCII "digits" such as "²")."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsgw_worker import pdu
from smsgw_worker.atmodem import ATModem, ModemEvent, _cpms_usage, decode_ussd_text
from smsgw_worker.serial_link import line_head, response_head

# What arrives between two line ends: any byte but CR and LF, read as latin-1.
latin1_line = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"), max_size=120
)
HEADS = (
    "+CMTI: ", "+CDSI: ", "+CMT: ", "+CDS: ", "+CUSD: ", "+CREG: ", "+CEREG: ", "+CGREG: ",
    "+CLIP: ", "+CPIN: ", "+CFUN: ", "+CIEV: ", "^SMMEMFULL", "RING", "RDY", "^BOOT", "+CMGL: ", "+CMGR: ", "+CPMS: ",
)  # fmt: skip
# Comma-separated fields as modems write them, mixed with noise; "²" and "³"
# are digits to str.isdigit() but not to int().
field = st.one_of(st.sampled_from(["0", "1", "2", "5", "255", "", '"SM"', '"SR"', "²", "³", "¹"]), latin1_line)
fields = st.lists(field, max_size=5).map(",".join)
# Lines that look like what they claim to be up to the colon, then anything.
modem_line = st.one_of(latin1_line, st.builds(lambda h, rest: h + rest, st.sampled_from(HEADS), fields))
hex_text = st.text(alphabet="0123456789ABCDEFabcdef", max_size=400)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.one_of(hex_text, st.binary(max_size=200).map(bytes.hex), latin1_line), st.booleans())
def test_the_pdu_decoder_raises_only_its_own_error(text, with_smsc):
    try:
        pdu.decode(text, with_smsc=with_smsc)
    except pdu.PduError:
        pass
    try:
        pdu.message_type(text, with_smsc=with_smsc)
    except pdu.PduError:
        pass


def _modem() -> tuple[ATModem, list[ModemEvent]]:
    events: list[ModemEvent] = []
    # Never opened: only the line handling is exercised, as the serial
    # reader thread would call it.
    return ATModem("/dev/null", on_event=events.append), events


@SETTINGS
@given(modem_line, st.one_of(st.none(), hex_text))
def test_any_unsolicited_line_becomes_an_event(line, pdu_line):
    modem, events = _modem()
    modem._unsolicited(line, pdu_line)
    assert len(events) == 1


@SETTINGS
@given(st.lists(modem_line, max_size=8), st.sampled_from(["+CMGL:", "+CMGR:"]), st.integers(0, 300))
def test_a_stored_message_listing_of_any_lines_parses(lines, head, index):
    modem, _ = _modem()
    for stored in modem._parse_listing(lines, head, index):
        assert stored.stat is None or stored.stat >= 0


@SETTINGS
@given(modem_line)
def test_ussd_answers_and_storage_usage_of_any_line_parse(line):
    reply = ATModem._parse_cusd(line)
    assert isinstance(reply["text"], str)
    _cpms_usage([line])
    line_head(line)
    response_head(line)


@SETTINGS
@given(latin1_line, st.one_of(st.none(), st.integers(0, 255)))
def test_ussd_text_of_any_bytes_decodes_to_text(text, dcs):
    assert isinstance(decode_ussd_text(text, dcs), str)
