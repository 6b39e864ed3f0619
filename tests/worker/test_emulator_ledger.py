"""What the chaos tier (tests/chaos) relies on in the emulator process: a
ledger file of every PDU that left, intact after the process is killed with
SIGKILL, the SIM's storage kept across such a kill (as a real SIM keeps it
through a power cut), and a replug that brings the port back under another
device node."""

import json
import os
import subprocess

import requests

from smsgw_worker.pdu import encode_submit

from .conftest import AtPort


def start_emulator(python, link, ledger, *extra):
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "smsgw_worker.emulator",
            "--link",
            str(link),
            "--control",
            "127.0.0.1:0",
            "--ledger",
            str(ledger),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("emulator ready"), line
    fields = dict(part.split("=", 1) for part in line.split()[2:])
    return proc, f"http://{fields['control']}"


def send(port: AtPort, number: str, text: str) -> None:
    [part] = encode_submit(number, text)
    port.write(f"AT+CMGS={part.tpdu_length}\r".encode())
    port.expect("> ")
    port.write(part.hex.encode() + b"\x1a")
    port.read_until(lambda t: "OK" in t)


def test_the_ledger_keeps_every_sent_pdu_when_the_emulator_is_killed(python, tmp_path):
    link, ledger = tmp_path / "ttyEMU0", tmp_path / "ledger.jsonl"
    proc, _ = start_emulator(python, link, ledger)
    port = AtPort(str(link))
    try:
        port.cmd("ATE0")
        send(port, "+15550001111", "first")
        send(port, "+15550002222", "second")
    finally:
        port.close()
        proc.kill()  # SIGKILL: no handler, no flush at exit
        proc.wait(5)
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(r["kind"], r["number"], r["text"], r["mr"]) for r in lines if r["kind"] == "sent"] == [
        ("sent", "+15550001111", "first", 0),
        ("sent", "+15550002222", "second", 1),
    ]

    # A restarted emulator appends after what the killed one wrote.
    proc, _ = start_emulator(python, link, ledger)
    port = AtPort(str(link))
    try:
        port.cmd("ATE0")
        send(port, "+15550003333", "third")
    finally:
        port.close()
        proc.kill()
        proc.wait(5)
    assert [r["text"] for r in map(json.loads, ledger.read_text().splitlines()) if r["kind"] == "sent"] == [
        "first",
        "second",
        "third",
    ]


def test_a_replug_onto_a_new_node_moves_the_link_to_another_device(python, tmp_path):
    link, ledger = tmp_path / "ttyEMU0", tmp_path / "ledger.jsonl"
    proc, base = start_emulator(python, link, ledger)
    try:
        before = os.path.realpath(link)
        requests.post(f"{base}/unplug", timeout=5).raise_for_status()
        assert not os.path.lexists(link)
        answer = requests.post(f"{base}/replug", json={"new_node": True}, timeout=5).json()
        after = os.path.realpath(link)
        assert after != before
        assert answer == {"plugged": True, "device": str(link), "node": after}
        port = AtPort(str(link))
        try:
            port.cmd("ATE0", timeout=5)  # a fresh power-up echoes
            assert port.cmd("AT", timeout=5) == ["OK"]
        finally:
            port.close()
    finally:
        proc.kill()
        proc.wait(5)


def test_a_report_due_while_the_modem_hangs_reaches_it_when_it_answers_again(tmp_path):
    """The network keeps what a hung modem cannot take; the ledger says when
    a report reached the modem, not when the network made it."""
    from smsgw_worker.emulator import Emulator

    ledger = tmp_path / "ledger.jsonl"
    with Emulator("generic", link=str(tmp_path / "ttyEMU0"), report_delay=0.05, ledger=str(ledger)) as emu:
        port = AtPort(emu.device)
        try:
            port.cmd("ATE0")
            port.cmd("AT+CNMI=2,1,0,1,0")
            emu.hang(True)
            emu.inject_status_report(7, "+15550001111")
            assert "+CDS" not in port.drain(0.3)  # nothing comes while it hangs
            assert '"kind":"report"' not in ledger.read_text()
            emu.hang(False)
            port.expect("+CDS:")
        finally:
            port.close()
    [report] = [r for r in map(json.loads, ledger.read_text().splitlines()) if r["kind"] == "report"]
    assert report["mr"] == 7


def test_a_report_stored_on_the_sim_is_there_after_the_emulator_is_killed(python, tmp_path):
    link, ledger, sim = tmp_path / "ttyEMU0", tmp_path / "ledger.jsonl", tmp_path / "sim.json"
    proc, _ = start_emulator(python, link, ledger, "--storage", str(sim), "--report-delay", "0.05")
    port = AtPort(str(link))
    try:
        port.cmd("ATE0")
        port.cmd("AT+CNMI=2,1,0,2,0")  # reports stored, announced by +CDSI
        send(port, "+15550001111", "reported")
        port.expect("+CDSI:")
    finally:
        port.close()
        proc.kill()  # a power cut: no handler, nothing saved at exit
        proc.wait(5)
    assert '"kind":"report"' in ledger.read_text()

    proc, _ = start_emulator(python, link, ledger, "--storage", str(sim))
    port = AtPort(str(link))
    try:
        port.cmd("ATE0")
        listing = port.cmd("AT+CMGL=4")
        [header] = [line for line in listing if line.startswith("+CMGL:")]
        index = int(header.split(":")[1].split(",")[0])
        assert port.cmd(f"AT+CMGD={index}") == ["OK"]
    finally:
        port.close()
        proc.kill()
        proc.wait(5)
    proc, _ = start_emulator(python, link, ledger, "--storage", str(sim))
    port = AtPort(str(link))
    try:
        port.cmd("ATE0")
        assert not [line for line in port.cmd("AT+CMGL=4") if line.startswith("+CMGL:")]  # the delete lasted too
    finally:
        port.close()
        proc.kill()
        proc.wait(5)
