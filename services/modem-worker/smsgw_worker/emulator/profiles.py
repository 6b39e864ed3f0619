"""The quirks of the modem families the emulator can pretend to be.

Each profile is what a driver meets on real hardware of that family: the
identity strings, how the ICCID is asked for, what an unknown command gets,
the noise it prints on its own, and how long the SIM stays busy after
power-up. Values come from the vendors' public AT command manuals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    manufacturer: str
    model: str
    revision: str
    # Final result for a command the modem does not know.
    unknown_reply: str = "ERROR"
    # The command that answers the ICCID, and the prefix of its answer ("" =
    # the bare number, as SIMCom's AT+CCID prints it).
    iccid_command: str = "+CCID"
    iccid_prefix: str = "+CCID: "
    # Lines printed once power-up completes (before the SIM is ready, and after).
    boot_lines: tuple[str, ...] = ()
    ready_lines: tuple[str, ...] = ()
    # +CME ERROR: 14 (SIM busy) for this long after power-up.
    sim_busy_seconds: float = 0.0
    # Unsolicited line printed every `noise_interval` seconds ("" = none);
    # "{rssi}" is replaced by the current signal.
    noise_line: str = ""
    noise_interval: float = 0.0
    # Where status reports land with AT+CNMI=..,..,..,2 ("+CDSI: <mem>,<index>").
    report_memory: str = "SM"
    # Extra commands that answer just OK (vendor setup commands drivers send).
    accepted: tuple[str, ...] = ()
    storage_size: int = 30
    # Line printed when the message storage becomes full.
    full_line: str = ""
    # "SMS not ready": for this long after the SIM is ready, SMS commands
    # (AT+CPMS, AT+CNMI, AT+CMGL, AT+CMGS, ...) answer +CMS ERROR:
    # <sms_not_ready_error>, and lines in `sms_ready_lines` (part of
    # ready_lines) are printed only once it is over.
    sms_ready_seconds: float = 0.0
    sms_not_ready_error: int = 302
    sms_ready_lines: tuple[str, ...] = ()
    # Power-up value of AT+CSMS and AT+CNMI (a module with such settings
    # saved): AT+CSMS=1 makes every +CMT/+CDS wait for AT+CNMA.
    csms: int = 0
    cnmi: tuple[int, int, int, int, int] = (2, 1, 0, 0, 0)
    # Behaviours recorded from real devices (names in QUIRKS), on from power-up;
    # Emulator.set_quirk switches them at run time.
    quirks: frozenset[str] = frozenset()


# What each quirk makes the emulator do, and the device it was recorded from.
QUIRKS: dict[str, str] = {
    "cmgr_no_stat": "AT+CMGR answers `+CMGR: ,,<length>` without <stat> (seen in AT+CMGR answers from the wild)",
    "sr_refused": 'AT+CPMS=? lists "SR" but AT+CPMS="SR" gets +CMS ERROR: 302 (Huawei E1752, ZTE K3565-Z)',
    "no_sms_config": (
        "AT+CPMS=? is `(),(),()`, AT+CPMS? is `+CPMS: ,,,,,,,,`, every AT+CPMS= and AT+CNMI= is ERROR: "
        "no +CMTI ever, stored SMS found only by AT+CMGL (Nokia N79)"
    ),
    "ussd_gsm7_packed_hex": "+CUSD text as hex of packed GSM 7-bit under DCS 15 (Huawei E1752, K3715)",
    "ussd_ucs2_hex": "+CUSD text as hex of UCS-2 under DCS 72 (ZTE, Qualcomm M6280)",
    "ussd_ucs2_language_hex": "+CUSD text as hex under DCS 17: a two-octet language code, then UCS-2",
    "send_needs_room": "AT+CMGS answers +CMS ERROR: 322 (memory full) while the receive memory is full (Huawei K3715)",
    "pin_everywhere": (
        "while the PIN is not entered, every command but AT+CPIN (bare AT included) answers "
        "+CME ERROR: 11 whatever AT+CMEE says (Huawei K3715, Qualcomm M6280)"
    ),
}


PROFILES: dict[str, Profile] = {
    # A plain 3GPP TS 27.007/27.005 modem with nothing surprising.
    "generic": Profile(
        name="generic",
        manufacturer="Emulated",
        model="GSM Modem",
        revision="EMU 1.0",
    ),
    # Huawei E3372/E173-style USB stick: "COMMAND NOT SUPPORT" for anything it
    # does not know, ^ICCID, periodic ^RSSI and ^BOOT noise, a SIM that is
    # busy for a moment after power-up.
    "huawei": Profile(
        name="huawei",
        manufacturer="huawei",
        model="E3372",
        revision="22.328.62.00.143",
        unknown_reply="COMMAND NOT SUPPORT",
        iccid_command="^ICCID",
        iccid_prefix="^ICCID: ",
        boot_lines=("^BOOT:20431365,0,0,0,75",),
        ready_lines=("^SRVST:2", "^SIMST:1"),
        sim_busy_seconds=0.3,
        noise_line="^RSSI:{rssi}",
        noise_interval=2.0,
        accepted=("^CURC", "^PORTSEL", "^SYSCFG", "^U2DIAG", "^SETPORT"),
        full_line='^SMMEMFULL: "SM"',
    ),
    # SIMCom SIM800/SIM7600-style module: RDY, +CFUN: 1, +CPIN: READY,
    # Call Ready and SMS Ready on power-up; AT+CCID prints the bare number.
    "simcom": Profile(
        name="simcom",
        manufacturer="SIMCOM_Ltd",
        model="SIMCOM_SIM7600E-H",
        revision="LE20B04SIM7600M22",
        iccid_command="+CCID",
        iccid_prefix="",
        boot_lines=("RDY",),
        ready_lines=("+CFUN: 1", "+CPIN: READY", "Call Ready", "SMS Ready"),
        sim_busy_seconds=0.5,
        accepted=("+CSCLK", "+CLTS", "+CIURC"),
        full_line='+CIEV: "SMSFULL",1',
        sms_ready_lines=("SMS Ready",),
    ),
    # Quectel EC25-style module: RDY, +QIND noise, AT+QCCID, status reports
    # stored in their own "SR" memory.
    "quectel": Profile(
        name="quectel",
        manufacturer="Quectel",
        model="EC25",
        revision="EC25EFAR06A08M4G",
        iccid_command="+QCCID",
        iccid_prefix="+QCCID: ",
        boot_lines=("RDY",),
        ready_lines=("+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"),
        sim_busy_seconds=0.2,
        noise_line='+QIND: "csq",{rssi},99',
        noise_interval=3.0,
        report_memory="SR",
        accepted=("+QURCCFG", "+QCFG", "+QINDCFG"),
        full_line='+QIND: "smsfull","SM"',
        sms_ready_lines=("+QIND: SMS DONE",),
    ),
    # A phase 2+ modem (TS 27.005 3.2.1, AT+CSMS=1) set up for direct
    # delivery: new SMS come as +CMT and reports as +CDS, each of which the
    # network holds until AT+CNMA acknowledges it, delivering it again when
    # the acknowledgement is late.
    "direct": Profile(
        name="direct",
        manufacturer="Emulated",
        model="GSM Modem (phase 2+)",
        revision="EMU 1.0",
        csms=1,
        cnmi=(2, 2, 0, 1, 0),
    ),
    # Nokia N79 (S60 phone as a modem): PDU mode and AT+CMGL, but no message
    # storage selection and no new-message indications at all.
    "nokia": Profile(
        name="nokia",
        manufacturer="Nokia",
        model="Nokia N79",
        revision="V 32.0.003",
        iccid_command="+ICCID",
        iccid_prefix="+ICCID: ",
        cnmi=(0, 0, 0, 0, 0),
        quirks=frozenset({"no_sms_config"}),
    ),
}
