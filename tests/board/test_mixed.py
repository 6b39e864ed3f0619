"""A USB modem (the emulator, behind the production worker) and a seed board
(behind `python -m smsgw_worker run` with MODEM_TRANSPORT=seed-mqtt) in one
stack: the API routes across both under their per-SIM limits."""

from __future__ import annotations

import secrets
import socket
import subprocess
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from smsgw_common.models import ApiKey, Modem, SimCard, User
from smsgw_worker.board.emulator import EmulatedBoard

from .conftest import random_number, wait_state, wait_until

EMULATED_WORKER = Path(__file__).resolve().parent.parent / "pipeline" / "emulated_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def stack(board_env, python, tmp_path_factory, db_session):
    """The API, one USB emulator worker and one board worker, each its own process."""
    with db_session() as s:
        # Earlier tests' SIMs and work out of the way: routing sees only these two.
        s.execute(text("UPDATE messages SET status = 'cancelled' WHERE status IN ('queued', 'sending')"))
        s.execute(text("UPDATE sim_cards SET status = 'inactive'"))
        s.execute(text("UPDATE modems SET online = false"))
        s.commit()
    procs: list[subprocess.Popen] = []
    port = free_port()
    tmp_path = tmp_path_factory.mktemp("mixed")
    # No periodic sweep: a rebalance holds room on the idle SIM before it frees
    # the busy one's (pipeline/rerouting.py), so a send in that instant sees
    # both full. Seen in CI under load; this module is about routing.
    env = dict(
        board_env,
        JWT_SECRET="board-tests-" + secrets.token_hex(24),
        ROUTING_CACHE_SECONDS="0",
        SWEEP_INTERVAL_SECONDS="3600",
    )

    def spawn(name: str, argv: list[str], extra: dict[str, str]) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "w") as log:
            proc = subprocess.Popen(argv, env=dict(env, **extra), stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def log_of(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]

    board_number = random_number()
    board = EmulatedBoard(board_number, root=env["BOARD_TOPIC_ROOT"], delay=0.05).start()
    usb_iccid = "8999" + "".join(str(secrets.randbelow(10)) for _ in range(15))
    try:
        spawn(
            "api",
            [python, "-m", "gunicorn", "-c", "python:smsgw_api.gunicorn_conf", "smsgw_api.wsgi:app"],
            {"API_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1", "GUNICORN_GRACEFUL_TIMEOUT": "3"},
        )
        spawn(
            "usb",
            [python, str(EMULATED_WORKER)],
            {
                "MODEM_ID": f"usb{secrets.token_hex(3)}",
                "EMU_ICCID": usb_iccid,
                "EMU_NUMBER": random_number(),
                "EMU_REPORT_DELAY": "0.1",
            },
        )
        spawn(
            "board",
            [python, "-m", "smsgw_worker", "run"],
            {"MODEM_TRANSPORT": "seed-mqtt", "BOARD_NUMBER": board_number},
        )

        def registered():
            for proc, name in zip(procs, ("api", "usb", "board"), strict=True):
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited:\n{log_of(name)}")
            with db_session() as s:
                rows = (
                    s.query(SimCard)
                    .join(Modem, Modem.id == SimCard.modem_id)
                    .filter(Modem.online, (SimCard.iccid == usb_iccid) | (SimCard.number == board_number))
                    .all()
                )
                return len(rows) == 2 and {("usb" if r.iccid == usb_iccid else "board"): r.id for r in rows}

        sims = wait_until(registered, 30, 0.1, "both workers to register")

        def answers():
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500
            except requests.RequestException:
                return False

        wait_until(answers, 30, 0.2, "the API to answer")
        yield f"http://127.0.0.1:{port}", sims, board
    finally:
        for proc in procs:
            stop(proc)
        board.stop()


@pytest.fixture(scope="module")
def bob(db_session) -> dict[str, str]:
    from smsgw_api.core.security import new_api_key
    from smsgw_api.domain.accounts import hash_password

    with db_session() as s:
        user = User(
            username=f"bob-{secrets.token_hex(3)}", password_hash=hash_password(secrets.token_hex(8)), role="user"
        )
        s.add(user)
        s.flush()
        key, prefix, digest = new_api_key()
        s.add(ApiKey(user_id=user.id, name="tests", prefix=prefix, key_hash=digest))
        s.commit()
    return {"X-API-Key": key}


def test_routing_spreads_over_a_usb_modem_and_a_board_by_their_per_minute_limits(stack, bob, db_session):
    base, sims, board = stack
    with db_session() as s:
        for sim_id in sims.values():
            s.get(SimCard, sim_id).limit_per_minute = 2
        s.commit()

    answers = [
        requests.post(f"{base}/api/sms", headers=bob, json={"recipient": random_number(), "message": "hi"}, timeout=10)
        for _ in range(5)
    ]

    codes = [a.status_code for a in answers]
    assert codes == [200, 200, 200, 200, 429], [a.text for a in answers]
    routed = [a.json()["sim_card_id"] for a in answers[:4]]
    assert sorted(routed) == sorted([sims["usb"]] * 2 + [sims["board"]] * 2)
    for answer in answers[:4]:
        wait_state(db_session, answer.json()["message_id"], "delivered", timeout=20)
    assert len(board.handed_over()) == 2


def test_a_stop_a_board_receives_opts_the_sender_out_as_one_a_usb_modem_receives_would(stack, bob, db_session):
    base, _, board = stack
    sender = random_number()

    board.inject(sender, "STOP")

    def opted_out():
        with db_session() as s:
            return s.scalar(text("SELECT count(*) FROM opt_outs WHERE number = :n"), {"n": sender}) == 1

    wait_until(opted_out, 20, 0.2, "the opt-out to apply")
    with db_session() as s:
        # The routing test above used up the per-minute limits; a 429 would hide the 422.
        s.execute(text("UPDATE sim_cards SET limit_per_minute = NULL"))
        s.commit()
    resp = requests.post(f"{base}/api/sms", headers=bob, json={"recipient": sender, "message": "hi"}, timeout=10)
    assert resp.status_code == 422 and resp.json()["code"] == "recipient_opted_out", resp.text
