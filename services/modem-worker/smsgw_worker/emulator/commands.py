# Over 500 lines on purpose: one function per AT command the emulator answers, a flat table to scan.
"""The AT commands the emulator answers: one function per command, taking
(emulator, op, arg) with op "", "?", "=?" or "=" (TS 27.007 / TS 27.005)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from smsgw_worker import pdu as pducodec

from . import network
from .state import (
    DEFERRED,
    MEMORIES,
    REC_READ,
    REC_UNREAD,
    STO_SENT,
    STO_UNSENT,
    Answer,
    CmeError,
    CmsError,
    Handler,
    UnknownCommand,
    tpdu_len,
)

if TYPE_CHECKING:
    from .core import EmulatedModem


def need_sim(emu: EmulatedModem, sms: bool = False) -> None:
    err = CmsError if sms else CmeError
    if not emu._sim_present:
        raise err(310 if sms else 10)
    if time.monotonic() < emu._sim_busy_until:
        raise err(314 if sms else 14)
    if not emu._pin_ok:
        raise err(311 if sms else 11)
    if sms:
        emu._need_sms_ready()


def _cmd_cmee(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return [f"+CMEE: {emu._st.cmee}"]
    if op == "=?":
        return ["+CMEE: (0-2)"]
    if op == "=" and arg.strip() in ("0", "1", "2"):
        emu._st.cmee = int(arg)
        return []
    raise CmeError(3)


def _cmd_cfun(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return [f"+CFUN: {emu._st.cfun}"]
    if op == "=?":
        return ["+CFUN: (0,1,4),(0,1)"]
    args = _ints(arg)
    if not args or args[0] not in (0, 1, 4):
        raise CmeError(3)
    if len(args) > 1 and args[1] == 1:
        # Reset: answer OK, then the module reboots.
        emu._lines("OK")
        emu._schedule(0.05, emu._power_up)
        return DEFERRED
    emu._st.cfun = args[0]
    return []


def _cmd_cpin(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if not emu._sim_present:
        raise CmeError(10)
    if time.monotonic() < emu._sim_busy_until:
        raise CmeError(14)
    if op == "?":
        if emu._pin_tries <= 0:
            return ["+CPIN: SIM PUK"]
        return ["+CPIN: READY" if emu._pin_ok else "+CPIN: SIM PIN"]
    if op == "=?":
        return []
    if op == "=":
        given = _unquote(arg.split(",")[0])
        if emu._pin_ok:
            raise CmeError(3)
        if emu._pin_tries <= 0:
            raise CmeError(12)
        if given != emu.pin:
            emu._pin_tries -= 1
            raise CmeError(16)
        emu._pin_ok = True
        emu._pin_tries = 3
        emu._schedule(0.05, lambda: network.pump(emu))
        return []
    raise CmeError(3)


def _cmd_cgmi(emu: EmulatedModem, op: str, arg: str) -> Answer:
    return [] if op == "=?" else [emu.profile.manufacturer]


def _cmd_cgmm(emu: EmulatedModem, op: str, arg: str) -> Answer:
    return [] if op == "=?" else [emu.profile.model]


def _cmd_cgmr(emu: EmulatedModem, op: str, arg: str) -> Answer:
    return [] if op == "=?" else [emu.profile.revision]


def _cmd_cgsn(emu: EmulatedModem, op: str, arg: str) -> Answer:
    return [] if op == "=?" else [emu.imei]


def _cmd_cimi(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return []
    need_sim(emu)
    return [emu.imsi]


def _cmd_iccid(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return []
    if not emu._sim_present:
        raise CmeError(10)
    return [f"{emu.profile.iccid_prefix}{emu.iccid}"]


def _cmd_cnum(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return []
    need_sim(emu)
    if not emu.own_number:
        return []
    toa = 145 if emu.own_number.startswith("+") else 129
    return [f'+CNUM: "","{emu.own_number}",{toa}']


def _cmd_csq(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return ["+CSQ: (0-31,99),(0-7,99)"]
    rssi = emu.rssi if emu._st.cfun == 1 else 99
    return [f"+CSQ: {rssi},99"]


def _cmd_cops(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        if emu._reg_stat() not in (1, 5):
            return ["+COPS: 0"]
        return [f'+COPS: 0,0,"{emu.operator}",7']
    if op == "=?":
        return [f'+COPS: (2,"{emu.operator}","Emu","00101",7),,(0-4),(0-2)']
    return []


def _cmd_cscs(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return [f'+CSCS: "{emu._st.cscs}"']
    if op == "=?":
        return ['+CSCS: ("IRA","GSM","UCS2")']
    value = _unquote(arg)
    if value.upper() not in ("IRA", "GSM", "UCS2"):
        raise CmeError(4)
    emu._st.cscs = value.upper()
    return []


def _cmd_cmgf(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return [f"+CMGF: {emu._st.cmgf}"]
    if op == "=?":
        return ["+CMGF: (0)"]
    if arg.strip() == "0":
        return []
    # Text mode is deliberately absent: the gateway speaks PDU mode, and
    # plenty of real modems (and firmwares) only do PDU mode too.
    raise CmsError(303)


def _cmd_csms(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return [f"+CSMS: {emu._st.csms},1,1,1"]
    if op == "=?":
        return ["+CSMS: (0,1)"]
    if arg.strip() not in ("0", "1"):
        raise CmsError(303)
    emu._need_sms_ready()
    emu._st.csms = int(arg)
    return ["+CSMS: 1,1,1"]


def _cmd_cnmi(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return ["+CNMI: " + ",".join(str(v) for v in emu._st.cnmi)]
    if op == "=?":
        return ["+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)"]
    if "no_sms_config" in emu.quirks:
        raise UnknownCommand()
    emu._need_sms_ready()
    values = [v.strip() for v in arg.split(",")]
    new = list(emu._st.cnmi)
    limits = (2, 3, 2, 2, 1)
    for i, v in enumerate(values[:5]):
        if v == "":
            continue
        if not v.isdigit() or int(v) > limits[i]:
            raise CmsError(303)
        new[i] = int(v)
    emu._st.cnmi = new
    return []


def _cmd_cpms(emu: EmulatedModem, op: str, arg: str) -> Answer:
    bare = "no_sms_config" in emu.quirks
    if op == "=?":
        return ["+CPMS: (),(),()"] if bare else ['+CPMS: ("SM","ME","SR"),("SM","ME"),("SM","ME")']
    if op == "?":
        emu._need_sms_ready()
        if bare:
            return ["+CPMS: ,,,,,,,,"]
        parts = []
        for m in emu._st.mem:
            parts.append(f'"{m}",{len(emu._storage[m])},{emu._capacity(m)}')
        return ["+CPMS: " + ",".join(parts)]
    if bare:
        raise UnknownCommand()
    need_sim(emu, sms=True)
    names = [_unquote(v).upper() for v in arg.split(",") if v.strip()]
    if not names or len(names) > 3:
        raise CmsError(302)
    if "SR" in names and "sr_refused" in emu.quirks:
        raise CmsError(302)
    for i, n in enumerate(names):
        n = "SM" if n == "MT" else n
        if n not in MEMORIES or (i > 0 and n == "SR"):
            raise CmsError(302)
        emu._st.mem[i] = n
    counts = [f"{len(emu._storage[m])},{emu._capacity(m)}" for m in emu._st.mem]
    return ["+CPMS: " + ",".join(counts)]


def _cmd_csca(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return [f'+CSCA: "{emu.smsc}",{145 if emu.smsc.startswith("+") else 129}']
    if op == "=":
        emu.smsc = _unquote(arg.split(",")[0])
    return []


def _cmd_cmgs(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return []
    if op != "=":
        raise CmsError(302)
    need_sim(emu, sms=True)
    try:
        length = int(arg.split(",")[0])
    except ValueError:
        raise CmsError(304) from None
    if not 7 <= length <= 164:
        raise CmsError(304)
    if emu._reboot_on_send:
        # The module restarts as the command arrives: boot lines instead of
        # the prompt, and the booting module (AT+CMEE back at 0, the SIM not
        # ready) refuses the command with a bare ERROR.
        emu._reboot_on_send = False

        def restart_and_refuse() -> None:
            emu._power_up()
            emu._final_error(CmsError(314))

        emu._schedule(0.01, restart_and_refuse)  # as AT+CFUN=1,1: after this command's turn
        return DEFERRED
    emu._prompt = length
    emu._cmgw_stat = None
    emu._pdu_buf.clear()
    emu._write(b"\r\n> ")
    return DEFERRED


def _cmd_cmgw(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return []
    if op != "=":
        raise CmsError(302)
    need_sim(emu, sms=True)
    args = _ints(arg)
    if not args or not 7 <= args[0] <= 164:
        raise CmsError(304)
    stat = args[1] if len(args) > 1 else STO_UNSENT
    if stat not in (REC_UNREAD, REC_READ, STO_UNSENT, STO_SENT):
        raise CmsError(304)
    emu._prompt = args[0]
    emu._cmgw_stat = stat
    emu._pdu_buf.clear()
    emu._write(b"\r\n> ")
    return DEFERRED


def _cmd_cmgl(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return ["+CMGL: (0-4)"]
    need_sim(emu, sms=True)
    want = _stat_filter(arg)
    out = []
    store = emu._storage[emu._st.mem[0]]
    for idx in sorted(store):
        m = store[idx]
        if want != 4 and m.status != want:
            continue
        out += [f"+CMGL: {idx},{m.status},,{tpdu_len(m.pdu)}", m.pdu]
        if m.status == REC_UNREAD:
            m.status = REC_READ
    return out


def _cmd_cmgr(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return []
    need_sim(emu, sms=True)
    try:
        idx = int(arg.strip())
    except ValueError:
        raise CmsError(321) from None
    m = emu._storage[emu._st.mem[0]].get(idx)
    if m is None:
        raise CmsError(321)
    stat = "" if "cmgr_no_stat" in emu.quirks else str(m.status)
    out = [f"+CMGR: {stat},,{tpdu_len(m.pdu)}", m.pdu]
    if m.status == REC_UNREAD:
        m.status = REC_READ
    return out


def _cmd_cmgd(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return ["+CMGD: (" + ",".join(str(i) for i in sorted(emu._storage[emu._st.mem[0]])) + "),(0-4)"]
    need_sim(emu, sms=True)
    args = _ints(arg)
    if not args:
        raise CmsError(321)
    store = emu._storage[emu._st.mem[0]]
    flag = args[1] if len(args) > 1 else 0
    if flag == 0:
        store.pop(args[0], None)  # deleting an empty slot is OK on real modems
    else:
        doomed = {1: {REC_READ}, 2: {REC_READ, STO_SENT}, 3: {REC_READ, STO_SENT, STO_UNSENT}}
        for idx in list(store):
            if flag == 4 or store[idx].status in doomed.get(flag, set()):
                del store[idx]
    emu.save_storage()
    emu._schedule(0.01, lambda: network.pump(emu))
    return []


def _cmd_cnma(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "=?":
        return ["+CNMA: (0-2)"]
    if emu._st.csms != 1 or not emu._pending_acks:
        raise CmsError(340)
    pending = emu._pending_acks.pop(0)
    if pending.event is not None:
        pending.event.live = False
    pending.record.update(acked_at=time.time(), outcome="acked")
    # The network hands over the next message it held back.
    emu._schedule(0.01, lambda: network.pump(emu))
    return []


def _cmd_cusd(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return ["+CUSD: 1"]
    if op == "=?":
        return ["+CUSD: (0-2)"]
    parts = [p.strip() for p in arg.split(",")]
    if not parts or parts[0] not in ("0", "1", "2"):
        raise CmeError(3)
    if parts[0] == "2":
        emu._ussd_menu = False  # the TE ends the session
        return []
    if len(parts) > 1 and parts[1]:
        need_sim(emu)
        code = _unquote(parts[1])
        m = 0
        if emu._ussd_menu:
            # A reply within the session the network keeps open.
            emu._ussd_menu = False
            m, reply = (2, "Your balance is 12.34 EUR") if code == "1" else (2, f"Invalid choice {code}")
        elif code == "*100#":
            reply = "Your balance is 12.34"
        elif code == "*101#":
            emu._ussd_menu = True
            m, reply = 1, "1 Balance 2 Bundles"
        else:
            reply = f"Unknown service code {code}"
        line = _cusd_line(emu, m, reply)
        emu._schedule(0.1, lambda: emu._urc(line))
    return []


def _cusd_line(emu: EmulatedModem, m: int, reply: str) -> str:
    """+CUSD as the firmware prints it: text, or hex of the network's bytes
    (profiles.QUIRKS ussd_*)."""
    if "ussd_gsm7_packed_hex" in emu.quirks:
        return f'+CUSD: {m},"{pducodec.pack_gsm7(reply).hex().upper()}",15'
    if "ussd_ucs2_hex" in emu.quirks:
        return f'+CUSD: {m},"{reply.encode("utf-16-be").hex().upper()}",72'
    if "ussd_ucs2_language_hex" in emu.quirks:
        language = pducodec.pack_gsm7("en")  # two septets, padded to two octets
        return f'+CUSD: {m},"{(language + reply.encode("utf-16-be")).hex().upper()}",17'
    return f'+CUSD: {m},"{reply}",15'


def _cmd_clip(emu: EmulatedModem, op: str, arg: str) -> Answer:
    if op == "?":
        return [f"+CLIP: {int(emu._clip)},1"]
    if op == "=?":
        return ["+CLIP: (0,1)"]
    if arg.strip() not in ("0", "1"):
        raise CmeError(3)
    emu._clip = arg.strip() == "1"
    return []


def hang_up(emu: EmulatedModem) -> None:
    """ATH (or AT+CHUP): a ringing call is rejected."""
    if emu._call is not None:
        emu._call["outcome"] = "rejected"
        emu._call = None


def _cmd_chup(emu: EmulatedModem, op: str, arg: str) -> Answer:
    hang_up(emu)
    return []


def _cmd_cbc(emu: EmulatedModem, op: str, arg: str) -> Answer:
    return [] if op == "=?" else ["+CBC: 0,100,4200"]


def _cmd_clac(emu: EmulatedModem, op: str, arg: str) -> Answer:
    return sorted(COMMANDS)


def _stat_filter(arg: str) -> int:
    value = arg.strip() or "0"
    words = {"REC UNREAD": 0, "REC READ": 1, "STO UNSENT": 2, "STO SENT": 3, "ALL": 4}
    if value.startswith('"'):
        raise CmsError(304)  # text-mode words are not valid in PDU mode
    if value.isdigit() and int(value) <= 4:
        return int(value)
    if value.upper() in words:
        raise CmsError(304)
    raise CmsError(302)


def basic(emu: EmulatedModem, cmd: str) -> Answer:
    if cmd in ("", "Q0", "V1", "&F", "&F0", "&C1", "&D0", "&D1", "&D2", "&W", "X4") or cmd.startswith("S"):
        if cmd.startswith("&F"):
            emu._st = emu._fresh_state(emu._st.cfun)
            network.abandon_acks(emu)
        return []
    if cmd in ("E0", "E1", "E"):
        emu._st.echo = cmd == "E1"
        return []
    if cmd in ("Z", "Z0"):
        emu._st = emu._fresh_state(emu._st.cfun)
        network.abandon_acks(emu)
        return []
    if cmd in ("H", "H0"):
        hang_up(emu)
        return []
    if cmd in ("I", "I0"):
        p = emu.profile
        return [f"Manufacturer: {p.manufacturer}", f"Model: {p.model}", f"Revision: {p.revision}", f"IMEI: {emu.imei}"]
    raise UnknownCommand()


def _reg_handler(name: str) -> Handler:
    """+CREG / +CEREG / +CGREG share one behaviour."""
    attr = name[1:].lower()

    def handler(emu: EmulatedModem, op: str, arg: str) -> Answer:
        if op == "?":
            n = getattr(emu._st, attr)
            extra = ',"00A1","0001B2C3",7' if n >= 2 else ""
            return [f"{name}: {n},{emu._reg_stat()}{extra}"]
        if op == "=?":
            return [f"{name}: (0-2)"]
        if op == "=" and arg.strip() in ("0", "1", "2"):
            setattr(emu._st, attr, int(arg))
            return []
        raise CmeError(3)

    return handler


def _ints(arg: str) -> list[int]:
    out = []
    for v in arg.split(","):
        v = v.strip()
        if not v:
            continue
        if not v.isdigit():
            raise CmeError(3)
        out.append(int(v))
    return out


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


COMMANDS: dict[str, Handler] = {
    "+CMEE": _cmd_cmee,
    "+CFUN": _cmd_cfun,
    "+CPIN": _cmd_cpin,
    "+CGMI": _cmd_cgmi,
    "+GMI": _cmd_cgmi,
    "+CGMM": _cmd_cgmm,
    "+GMM": _cmd_cgmm,
    "+CGMR": _cmd_cgmr,
    "+GMR": _cmd_cgmr,
    "+CGSN": _cmd_cgsn,
    "+GSN": _cmd_cgsn,
    "+CIMI": _cmd_cimi,
    "+CNUM": _cmd_cnum,
    "+CSQ": _cmd_csq,
    "+CREG": _reg_handler("+CREG"),
    "+CEREG": _reg_handler("+CEREG"),
    "+CGREG": _reg_handler("+CGREG"),
    "+COPS": _cmd_cops,
    "+CSCS": _cmd_cscs,
    "+CMGF": _cmd_cmgf,
    "+CSMS": _cmd_csms,
    "+CNMI": _cmd_cnmi,
    "+CPMS": _cmd_cpms,
    "+CSCA": _cmd_csca,
    "+CMGS": _cmd_cmgs,
    "+CMGW": _cmd_cmgw,
    "+CMGL": _cmd_cmgl,
    "+CMGR": _cmd_cmgr,
    "+CMGD": _cmd_cmgd,
    "+CNMA": _cmd_cnma,
    "+CUSD": _cmd_cusd,
    "+CBC": _cmd_cbc,
    "+CLIP": _cmd_clip,
    "+CHUP": _cmd_chup,
    "+CLAC": _cmd_clac,
}

ICCID_HANDLER: Handler = _cmd_iccid  # under whichever name the profile gives it
