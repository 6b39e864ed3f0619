"""The worker as people run it: commands over MQTT, `python -m smsgw_worker
run` with SIGTERM and the last will, configuration errors, and `probe`."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from support.services import MQTT_HOST, MQTT_PORT
from support.tcp_reset import ResettingRelay
from support.waits import wait_until

from smsgw_common.models import Modem
from smsgw_common.topics import Topics
from smsgw_worker.emulator import Emulator

from .worker_harness import Listener, Rig, wait_for


def _command(r: Rig, command: str, **args) -> dict:
    request_id = uuid.uuid4().hex
    r.mqtt.publish(r.topics.command(r.modem_id), {"command": command, "request_id": request_id, "args": args})
    return r.mqtt.wait(r.topics.command_reply(r.modem_id), lambda p: p["request_id"] == request_id, timeout=10)


def test_a_ussd_command_is_answered_with_the_network_reply(rig):
    r = rig()
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    reply = _command(r, "ussd", code="*100#")
    assert reply["ok"] is True
    assert reply["result"]["text"] == "Your balance is 12.34"


def test_a_ussd_command_with_a_bad_code_gets_a_clear_error(rig):
    r = rig()
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    reply = _command(r, "ussd", code='*100#";ATZ')
    assert reply["ok"] is False and "not a USSD code" in reply["error"]


def test_refresh_and_restart_commands_work_and_an_invalid_command_is_dropped(rig):
    r = rig()
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    r.mqtt.publish(r.topics.command(r.modem_id), {"command": "format-disk", "request_id": "x"})
    reply = _command(r, "refresh")
    assert reply["ok"] and reply["result"]["iccid"] == r.iccid
    reply = _command(r, "restart")
    assert reply["ok"]
    r.wait_state(r.queue_sms("after restart"), "sent", timeout=10)


def test_a_clean_stop_publishes_offline_and_marks_the_modem_row(rig):
    r = rig()
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    r.stop_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: not p["online"] and p.get("reason") == "shutdown")
    with r.Session() as s:
        assert s.get(Modem, r.modem_id).online is False


def _env(service_env, modem_id: str, **extra) -> dict:
    env = dict(
        service_env,
        MODEM_ID=modem_id,
        MODEM_EMULATOR="simcom",
        LOG_LEVEL="INFO",
        WORKER_CLAIM_INTERVAL="0.3",
        WORKER_REFRESH_INTERVAL="1",
        MODEM_COMMAND_TIMEOUT="2",
    )
    env.pop("MODEM_DEVICE", None)
    env.update(extra)
    return env


@contextmanager
def _worker_process(service_env, python, mqtt_prefix, name: str, **popen_kw):
    """`python -m smsgw_worker run` on an emulated modem; yields the process
    and a Listener subscribed to its state topic (also yielded)."""
    modem_id = f"{name}-{uuid.uuid4().hex[:8]}"
    state_topic = Topics(mqtt_prefix).state(modem_id)
    listener = Listener([state_topic])
    proc = subprocess.Popen([python, "-m", "smsgw_worker", "run"], env=_env(service_env, modem_id), **popen_kw)
    try:
        yield proc, listener, state_topic
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()


def test_the_process_runs_an_emulated_modem_drains_on_sigterm_and_publishes_offline(service_env, python, mqtt_prefix):
    with _worker_process(
        service_env, python, mqtt_prefix, "proc", stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as (proc, listener, state_topic):
        state = listener.wait(state_topic, lambda p: p["online"], timeout=20)
        assert state["manufacturer"] == "SIMCOM_Ltd" and state["iccid"].startswith("89999")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        listener.wait(state_topic, lambda p: not p["online"] and p.get("reason") == "shutdown")
        out = proc.stdout.read().decode()
        assert '"service": "modem-worker"' in out  # JSON log lines


def test_a_killed_process_leaves_its_last_will_retained(service_env, python, mqtt_prefix):
    with _worker_process(
        service_env, python, mqtt_prefix, "lwt", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as (proc, listener, state_topic):
        listener.wait(state_topic, lambda p: p["online"], timeout=20)
        proc.kill()
        proc.wait(5)
        listener.wait(state_topic, lambda p: not p["online"] and p.get("reason") == "lwt", timeout=10)
    # Retained: a newcomer sees the modem offline too.
    late = Listener([state_topic])
    try:
        late.wait(state_topic, lambda p: p.get("reason") == "lwt", timeout=5)
    finally:
        late.close()


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"MODEM_ID": ""}, "MODEM_ID is not set"),
        ({"MODEM_ID": "bad/id"}, "MODEM_ID may only hold"),
        ({"MODEM_EMULATOR": "", "MODEM_DEVICE": ""}, "MODEM_DEVICE is not set"),
        ({"MODEM_PIN": "12ab"}, "MODEM_PIN must be 4 to 8 digits"),
        ({"MODEM_EMULATOR": "no-such-modem"}, "MODEM_EMULATOR must be one of"),
    ],
)
def test_it_refuses_to_start_on_bad_settings_with_a_clear_message(service_env, python, extra, message):
    env = _env(service_env, "cfg-test", **extra)
    done = subprocess.run([python, "-m", "smsgw_worker", "run"], env=env, capture_output=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr.decode()


def test_probe_lists_the_port_that_answers_at_and_what_it_holds(python):
    emu = Emulator("quectel", iccid="8944000000000000017").start()
    silent_master, silent_slave = os.openpty()
    try:
        wait_until(lambda: emu._booted, 5, 0.02, "the quectel SIM to get past its busy window")
        done = subprocess.run(
            [python, "-m", "smsgw_worker", "probe", emu.device, os.ttyname(silent_slave)],
            capture_output=True,
            timeout=60,
        )
        out = done.stdout.decode()
        assert done.returncode == 0, out + done.stderr.decode()
        first, second = out.strip().splitlines()
        assert first.startswith(f"{emu.device}: AT port")
        assert "manufacturer=Quectel" in first and "iccid=8944000000000000017" in first and "imei=" in first
        assert second.startswith(f"{os.ttyname(silent_slave)}: no AT answer")
    finally:
        emu.stop()
        os.close(silent_master)
        os.close(silent_slave)


def test_usage_is_printed_for_an_unknown_subcommand(python):
    done = subprocess.run([python, "-m", "smsgw_worker", "frobnicate"], capture_output=True, timeout=30)
    assert done.returncode == 2 and "usage:" in done.stderr.decode()


def test_the_demo_emulator_is_steered_through_its_control_server(service_env, python, database_url):
    import socket

    import requests

    from smsgw_common.db import make_engine, make_sessionmaker
    from smsgw_common.models import Message

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    modem_id = f"demo-{uuid.uuid4().hex[:8]}"
    sender = "+1555" + str(uuid.uuid4().int)[:7]
    proc = subprocess.Popen(
        [python, "-m", "smsgw_worker", "run"],
        env=_env(service_env, modem_id, MODEM_EMULATOR_CONTROL=f"127.0.0.1:{port}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = make_engine(database_url, pool_size=1)
    try:
        base = f"http://127.0.0.1:{port}"

        def health():
            try:
                return requests.get(base + "/health", timeout=2).json()
            except requests.ConnectionError:
                return None  # not listening yet

        assert wait_for(health, 20, lambda: "the control server never answered")["profile"] == "simcom"
        requests.post(base + "/inject", json={"sender": sender, "text": "hello demo"}, timeout=5).raise_for_status()
        Session = make_sessionmaker(engine)

        def texts():
            with Session() as s:
                return s.scalars(select(Message.message).where(Message.sender == sender)).all()

        assert wait_for(texts, 20, lambda: "the injected SMS never reached the database") == ["hello demo"]
    finally:
        proc.terminate()
        proc.wait(15)
        engine.dispose()


def test_the_worker_loop_keeps_its_heartbeat_file_fresh_for_the_health_check(rig, tmp_path):
    beat = tmp_path / "alive"
    r = rig(heartbeat_file=str(beat))
    r.start_worker()
    r.mqtt.wait(r.topics.state(r.modem_id), lambda p: p["online"])
    first = wait_for(lambda: beat.exists() and beat.stat().st_mtime_ns, 10)
    # An idle loop still turns (claim timer): the file keeps being touched.
    wait_for(lambda: beat.stat().st_mtime_ns > first, 10)
    r.wait_state(r.queue_sms("with a heartbeat"), "sent", timeout=10)


def test_after_its_broker_connection_is_reset_the_worker_is_shown_online_again(service_env, python, mqtt_prefix):
    """The broker publishes the worker's last will ("offline") when the
    connection dies without a goodbye; the worker must reconnect and say it is
    online again, or the dashboard shows a working modem offline for good."""
    relay = ResettingRelay((MQTT_HOST, MQTT_PORT))
    modem_id = f"reset-{uuid.uuid4().hex[:8]}"
    state_topic = Topics(mqtt_prefix).state(modem_id)
    listener = Listener([state_topic])
    # No periodic refresh within the test: only the reconnect can say "online" again.
    env = _env(service_env, modem_id, MQTT_HOST="127.0.0.1", MQTT_PORT=str(relay.port), WORKER_REFRESH_INTERVAL="300")
    proc = subprocess.Popen(
        [python, "-m", "smsgw_worker", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        listener.wait(state_topic, lambda p: p["online"], timeout=20)
        assert relay.reset() == 1

        def online_after_the_will() -> bool:
            states = listener.payloads(state_topic)
            will = next((i for i, p in enumerate(states) if not p["online"] and p.get("reason") == "lwt"), None)
            return will is not None and any(p["online"] for p in states[will + 1 :])

        wait_until(
            online_after_the_will, 15, 0.05, lambda: f"online after the will; saw {listener.payloads(state_topic)}"
        )
        assert relay.accepted == 2
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out = proc.communicate(timeout=15)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate(timeout=5)[0].decode()
        listener.close()
        relay.close()
    assert "Traceback" not in out, out
