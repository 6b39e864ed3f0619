"""The emulator as a process with its JSON control API, as the demo stack runs it."""

import os
import signal
import subprocess

import pytest
import requests

from smsgw_worker.pdu import decode, encode_submit

from .conftest import AtPort


@pytest.fixture
def emulator_process(python, tmp_path):
    link = tmp_path / "ttyEMU0"
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "smsgw_worker.emulator",
            "--profile",
            "generic",
            "--link",
            str(link),
            "--control",
            "127.0.0.1:0",
            "--report-delay",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # "emulator ready device=... control=HOST:PORT"
        assert line.startswith("emulator ready"), line
        fields = dict(part.split("=", 1) for part in line.split()[2:])
        yield proc, fields["device"], f"http://{fields['control']}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def test_the_control_api_drives_the_emulator_and_sigterm_stops_it(emulator_process):
    proc, device, base = emulator_process
    assert requests.get(f"{base}/health", timeout=5).json()["ok"] is True
    port = AtPort(device)
    try:
        port.cmd("ATE0")
        port.cmd("AT+CMEE=1")
        assert requests.post(f"{base}/inject", json={"sender": "+15551230000", "text": "hi"}, timeout=5).json() == {
            "stored": [0]
        }
        port.expect("+CMTI:")
        assert decode(port.cmd("AT+CMGR=0")[1]).text == "hi"

        requests.post(f"{base}/fail", json={"count": 1, "code": 42}, timeout=5).raise_for_status()
        [part] = encode_submit("+15550001111", "via the api")
        for expected in ("+CMS ERROR: 42", "OK"):
            port.write(f"AT+CMGS={part.tpdu_length}\r".encode())
            port.expect("> ")
            port.write(part.hex.encode() + b"\x1a")
            assert port.lines(port.read_until(lambda t, want=expected: want in t))[-1] == expected
        sent = requests.get(f"{base}/sent", timeout=5).json()
        assert [(s["number"], s["text"]) for s in sent] == [("+15550001111", "via the api")]

        requests.post(f"{base}/hang", json={"on": True}, timeout=5).raise_for_status()
        with pytest.raises(TimeoutError):
            port.cmd("AT", timeout=0.3)
        requests.post(f"{base}/hang", json={"on": False}, timeout=5).raise_for_status()
        assert port.cmd("AT") == ["OK"]
        requests.post(f"{base}/latency", json={"seconds": 0.01}, timeout=5).raise_for_status()
    finally:
        port.close()

    requests.post(f"{base}/unplug", timeout=5).raise_for_status()
    assert not os.path.exists(device)
    requests.post(f"{base}/replug", timeout=5).raise_for_status()
    assert os.path.exists(device)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert not os.path.exists(device)


def test_the_control_api_exposes_every_fault_and_network_control(emulator_process):
    _, device, base = emulator_process

    def post(path, body=None):
        r = requests.post(f"{base}{path}", json=body or {}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    port = AtPort(device)
    try:
        port.cmd("ATE0")
        port.cmd("AT+CMEE=1")
        # A raw PDU (dreamfabric.com/sms "hellohello") and a multipart SMS in a chosen order.
        assert post("/inject", {"pdu": "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37"}) == {
            "stored": [0]
        }
        assert post(
            "/inject", {"sender": "+15550000002", "text": "x" * 200, "multipart_order": [2, 1], "concat_ref": 7}
        ) == {"stored": [1, 2]}
        stored = requests.get(f"{base}/stored", timeout=5).json()
        assert [decode(m["pdu"]).text for m in stored][0] == "hellohello"
        assert [decode(m["pdu"]).concat.seq for m in stored[1:]] == [2, 1]
        port.cmd("AT+CMGD=0,4")

        # Garbage on the line, then a clean answer.
        assert post("/garbage", {"bytes": 16}) == {"sent": 16}
        port.drain(0.1)
        assert port.cmd("AT") == ["OK"]

        # Full storage: a new SMS waits at the network.
        post("/fill-storage")
        assert port.cmd("AT+CPMS?")[0].startswith('+CPMS: "SM",30,30')
        assert post("/inject", {"sender": "+15550000003", "text": "later"}) == {"stored": []}
        port.cmd("AT+CMGD=0,4")

        # A send that leaves without its reference.
        assert post("/lose-references", {"count": 1, "final": "ERROR"}) == {"losing": 1, "final": "ERROR"}
        [part] = encode_submit("+15550001111", "lost ref")
        port.write(f"AT+CMGS={part.tpdu_length}\r".encode())
        port.expect("> ")
        port.write(part.hex.encode() + b"\x1a")
        assert "+CMGS" not in port.read_until(lambda t: "ERROR" in t)

        # Direct delivery with acknowledgement, and a report from the network.
        port.drain(0.2)
        assert post("/direct-delivery", {"on": True}) == {"direct": True}
        post("/inject", {"sender": "+15550000004", "text": "direct", "store": False})
        assert "+CMT: ," in port.expect("+CMT:")
        assert port.cmd("AT+CNMA") == ["OK"]
        post("/inject-report", {"mr": 3, "recipient": "+15550001111", "status": 0})
        assert "+CDS: " in port.expect("+CDS:")
        assert port.cmd("AT+CNMA") == ["OK"]
        direct = requests.get(f"{base}/direct", timeout=5).json()
        assert [(d["kind"], d["outcome"]) for d in direct] == [("sms", "acked"), ("report", "acked")]
        index = post("/inject-report", {"mr": 4, "recipient": "+15550001111", "status": 65, "store": True})["stored"]
        [report] = [m for m in requests.get(f"{base}/stored", timeout=5).json() if m["index"] == index]
        assert decode(report["pdu"]).status == 65

        # Signal, registration, report status.
        assert post("/signal", {"rssi": 9}) == {"rssi": 9}
        assert port.cmd("AT+CSQ")[0] == "+CSQ: 9,99"
        post("/registration", {"stat": 5})
        assert port.cmd("AT+CREG?")[0] == "+CREG: 0,5"
        assert post("/report-status", {"status": 70}) == {"status": 70}

        # SIM removal and back.
        assert post("/sim", {"present": False}) == {"present": False}
        port.drain(0.1)
        assert port.cmd("AT+CPIN?") == ["+CME ERROR: 10"]
        post("/sim", {"present": True})
        assert port.cmd("AT+CPIN?")[-1] == "OK"
    finally:
        port.close()


def test_the_control_api_switches_real_modem_behaviours(emulator_process):
    _, device, base = emulator_process
    assert requests.post(f"{base}/quirk", json={"name": "cmgr_no_stat"}, timeout=5).json() == {
        "quirk": "cmgr_no_stat",
        "on": True,
    }
    assert "cmgr_no_stat" in requests.get(f"{base}/health", timeout=5).json()["quirks"]
    assert requests.post(f"{base}/smsc", json={"number": ""}, timeout=5).json() == {"smsc": ""}
    port = AtPort(device)
    try:
        port.cmd("ATE0")
        assert port.cmd("AT+CSCA?")[0] == '+CSCA: "",129'
        port.cmd("AT+CLIP=1")
        requests.post(f"{base}/call", json={"number": "+4915112345678", "rings": 1, "interval": 0.1}, timeout=5)
        assert '+CLIP: "+4915112345678",145' in port.expect("+CLIP:")
        assert requests.post(f"{base}/reboot", json={}, timeout=5).json() == {"rebooted": True}
        port.cmd("ATE0")
        assert port.cmd("AT+CLIP?")[0] == "+CLIP: 0,1"  # a reboot forgets it
    finally:
        port.close()


@pytest.mark.parametrize(
    "path, body, status",
    [
        ("/inject", {"sender": "+1555"}, 400),
        ("/inject", {"sender": 5, "text": "x"}, 400),
        ("/fail", {"count": -1}, 400),
        ("/latency", {"seconds": "fast"}, 400),
        ("/hang", [], 400),
        ("/inject", {"pdu": "zz"}, 400),
        ("/inject", {"sender": "+1555", "text": "x", "multipart_order": "12"}, 400),
        ("/inject-report", {"mr": 300, "recipient": "+1555"}, 400),
        ("/garbage", {"bytes": 0}, 400),
        ("/fill-storage", {"memory": "XX"}, 400),
        ("/sim", {}, 400),
        ("/lose-references", {"count": -1}, 400),
        ("/signal", {"rssi": 40}, 400),
        ("/registration", {"stat": "home"}, 400),
        ("/quirk", {"name": "no_such_quirk"}, 400),
        ("/quirk", {"name": "cmgr_no_stat", "on": "yes"}, 400),
        ("/call", {"number": "+1555", "rings": 0}, 400),
        ("/smsc", {"number": 5}, 400),
        ("/nowhere", {}, 404),
    ],
)
def test_bad_control_requests_get_a_clear_error(emulator_process, path, body, status):
    _, _, base = emulator_process
    r = requests.post(f"{base}{path}", json=body, timeout=5)
    assert r.status_code == status
    assert r.json()["error"]


def test_a_bad_control_address_is_refused(python):
    r = subprocess.run(
        [python, "-m", "smsgw_worker.emulator", "--control", "nowhere"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
