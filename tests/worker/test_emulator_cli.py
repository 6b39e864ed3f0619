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
        [python, "-m", "smsgw_worker.emulator", "--profile", "generic", "--link", str(link),
         "--control", "127.0.0.1:0", "--report-delay", "0.05"],
        stdout=subprocess.PIPE, text=True,
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
        assert requests.post(f"{base}/inject", json={"sender": "+15551230000", "text": "hi"}, timeout=5).json() == {"stored": [0]}
        port.expect("+CMTI:")
        assert decode(port.cmd("AT+CMGR=0")[1]).text == "hi"

        requests.post(f"{base}/fail", json={"count": 1, "code": 42}, timeout=5).raise_for_status()
        [part] = encode_submit("+15550001111", "via the api")
        for expected in ("+CMS ERROR: 42", "OK"):
            port.write(f"AT+CMGS={part.tpdu_length}\r".encode())
            port.expect("> ")
            port.write(part.hex.encode() + b"\x1a")
            assert port.lines(port.read_until(lambda t: expected in t))[-1] == expected
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


@pytest.mark.parametrize(
    "path, body, status",
    [
        ("/inject", {"sender": "+1555"}, 400),
        ("/inject", {"sender": 5, "text": "x"}, 400),
        ("/fail", {"count": -1}, 400),
        ("/latency", {"seconds": "fast"}, 400),
        ("/hang", [], 400),
        ("/nowhere", {}, 404),
    ],
)
def test_bad_control_requests_get_a_clear_error(emulator_process, path, body, status):
    _, _, base = emulator_process
    r = requests.post(f"{base}{path}", json=body, timeout=5)
    assert r.status_code == status
    assert r.json()["error"]


def test_a_bad_control_address_is_refused(python):
    r = subprocess.run([python, "-m", "smsgw_worker.emulator", "--control", "nowhere"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "HOST:PORT" in r.stderr
