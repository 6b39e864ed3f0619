"""`python -m smsgw_worker.board.emulator`: the demo profile's board."""

from __future__ import annotations

import json
import signal
import socket
import subprocess

import requests

from .conftest import random_number, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_emulator_process_answers_takes_injections_and_says_it_is_connected(board_env, python, tmp_path, listen):
    number = random_number()
    root = board_env["BOARD_TOPIC_ROOT"]
    heartbeat = tmp_path / "alive"
    port = free_port()
    seed = listen(f"{root}/sms/status", f"{root}/sms/receive")
    with open(tmp_path / "board.log", "w") as log:
        proc = subprocess.Popen(
            [python, "-m", "smsgw_worker.board.emulator", "--number", number, "--root", root]
            + ["--delay", "0.05", "--words", "sent,Delivered", "--control", f"127.0.0.1:{port}"],
            env=dict(board_env, WORKER_HEARTBEAT_FILE=str(heartbeat)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(heartbeat.exists, 15, what="the heartbeat of a connected board")
        send = {"number": "+4917700000003", "message": "hi", "message_id": "77"}
        seed.client.publish(f"{root}sms/send/{number[1:]}", json.dumps(send), qos=1).wait_for_publish(5)
        statuses = wait_until(
            lambda: len(seed.matching(f"{root}/sms/status")) == 2 and seed.matching(f"{root}/sms/status")
        )
        assert [s["status"] for s in statuses] == ["sent", "Delivered"]
        assert statuses[0] == {
            "message_id": "77",
            "sender_number": number,
            "receiver_number": "+4917700000003",
            "message": "hi",
            "status": "sent",
        }
        control = f"http://127.0.0.1:{port}"
        assert requests.get(control + "/sent", timeout=5).json() == [send]
        assert requests.post(control + "/inject", json={"sender": "+4917700000004", "text": "yo"}, timeout=5).ok
        assert wait_until(lambda: seed.matching(f"{root}/sms/receive"))[0] == {
            "sender_number": "+4917700000004",
            "receiver_number": number,
            "message": "yo",
        }
        assert requests.post(control + "/configure", json={"fault": "sometimes"}, timeout=5).status_code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, (tmp_path / "board.log").read_text()
