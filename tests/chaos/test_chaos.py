"""Issue 12's scenarios: one fault each under a steady stream of sends
(200 by default, CHAOS_MESSAGES), then the strict verdict: nothing lost,
nothing transmitted twice, nothing stuck, `unknown` no more than the sends in
flight at the fault, sends again within 5 s of the recovery, and no message
held more than 10 s past it. The table of every scenario is printed at the
end of the session (conftest.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from support.waits import wait_until

from smsgw_worker import pdu as pducodec

from .scenario import MESSAGES, RATE, Scenario, run_fault
from .verdict import Injected, Row, reconcile_inbound, table

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


def passes(row: Row) -> None:
    assert not row.failures(), "\n" + table([row])


def test_without_a_fault_every_message_leaves_once_and_at_once(scenario):
    """The baseline of the same run and load: the figures a healthy gateway
    shows, and proof that the verdict can pass."""
    sc: Scenario = scenario("baseline_no_fault")

    def fault():
        sc.fault()
        sc.recovered()

    passes(run_fault(sc, fault))


def test_a_worker_killed_mid_send_loses_and_repeats_nothing(scenario):
    sc: Scenario = scenario("worker_kill9")
    modem = sc.gateway.modems[0]
    sc.faulty = [modem]

    def fault():
        # A slow network for a moment, so the kill lands while AT+CMGS is pending.
        modem.post("/latency", {"seconds": 2.0})
        pending = wait_until(
            lambda: sc.in_flight(), 20, 0.02, "a part `submitting` (a send under way) to kill the worker in"
        )
        sc.fault(in_flight=pending)
        modem.kill_worker()
        modem.post("/latency", {"seconds": sc.gateway.modems[1].send_latency})
        modem.start_worker(sc.gateway.env)  # as the container's restart policy would
        sc.recovered()
        # Reports the modem took while no worker had its port open wait in
        # its storage (AT+CNMI ds=2): the verdict counts one still `sent` stuck.

    passes(run_fault(sc, fault))


def test_the_api_killed_loses_no_acknowledged_message(scenario):
    sc: Scenario = scenario("api_kill9")

    def fault():
        sc.fault()
        sc.gateway.api.kill()
        sc.gateway.api.start(sc.gateway.env)
        sc.gateway.api.wait_ready()
        sc.recovered()

    passes(run_fault(sc, fault))


def test_a_mosquitto_restart_delays_nothing(scenario):
    sc: Scenario = scenario("mosquitto_restart")

    def fault():
        sc.fault()
        sc.services.mosquitto.restart()
        sc.services.mosquitto.ready()
        sc.recovered()

    passes(run_fault(sc, fault))


def test_redis_killed_and_back_empty_delays_nothing(scenario):
    sc: Scenario = scenario("redis_kill9")

    def fault():
        sc.fault()
        sc.services.redis.kill()
        sc.services.redis.wait_exited()
        time.sleep(2)  # the outage itself
        sc.services.redis.resume()
        sc.services.redis.ready()
        sc.recovered()

    passes(run_fault(sc, fault))


def test_postgres_stopped_for_ten_seconds_keeps_every_outcome(scenario):
    sc: Scenario = scenario("postgres_stop_10s")

    def fault():
        sc.fault()
        sc.services.postgres.stop_immediately()
        time.sleep(10)  # the outage itself (issue 12: 10 s)
        sc.services.postgres.resume()
        sc.services.postgres.ready()
        sc.recovered()

    passes(run_fault(sc, fault))


def test_a_modem_hung_for_fifteen_seconds_recovers_at_once(scenario):
    sc: Scenario = scenario("modem_hang_15s")
    modem = sc.gateway.modems[0]
    sc.faulty = [modem]

    def fault():
        sc.fault()
        modem.post("/hang", {"on": True})
        time.sleep(15)  # the hang itself (issue 12: 15 s)
        modem.post("/hang", {"on": False})
        sc.recovered()

    # 200 messages over 40 s: the hang (from ~13 s to ~28 s) ends with
    # traffic still coming for the modem that hung.
    passes(run_fault(sc, fault, rate=min(RATE, MESSAGES / 40)))


@pytest.mark.parametrize("new_node", [False, True], ids=["same_node", "new_node"])
def test_a_modem_unplugged_and_replugged_recovers(scenario, new_node):
    sc: Scenario = scenario("unplug_replug_" + ("new_node" if new_node else "same_node"))
    modem = sc.gateway.modems[0]
    sc.faulty = [modem]

    def fault():
        sc.fault()
        modem.post("/unplug")
        time.sleep(3)  # the cable stays out this long
        answer = modem.post("/replug", {"new_node": new_node})
        assert answer["node"] is not None
        sc.recovered()

    passes(run_fault(sc, fault))


def test_garbage_on_the_serial_line_loses_and_repeats_nothing(scenario):
    sc: Scenario = scenario("garbage")
    sc.faulty = sc.gateway.modems

    def fault():
        sc.fault()
        for _ in range(5):
            for modem in sc.gateway.modems:
                modem.post("/garbage", {"bytes": 64})
            time.sleep(0.4)  # bursts spread over two seconds of traffic
        sc.recovered()

    passes(run_fault(sc, fault))


def test_a_power_cut_of_the_whole_stack_loses_and_repeats_nothing(scenario):
    sc: Scenario = scenario("power_cut")
    services = sc.services.all()

    def fault():
        sc.fault()
        # Every process and container at once: no one gets to tidy up.
        cuts = [threading.Thread(target=sc.gateway.kill_all)]
        cuts += [threading.Thread(target=s.kill) for s in services]
        for t in cuts:
            t.start()
        for t in cuts:
            t.join(30)
        for s in services:
            s.wait_exited()
            s.resume()
        for s in services:
            s.ready()
        sc.gateway.start()
        sc.wait_modems_online()
        sc.recovered()

    passes(run_fault(sc, fault))


# --- inbound -------------------------------------------------------------------


def inbox_texts(sc: Scenario, token: str) -> dict[str, int]:
    """How often each inbound text with the token is in the inbox, paged through the API."""
    out: dict[str, int] = {}
    before = None
    for _ in range(100):
        params = {"q": token, "per_page": 100, **({"before_id": before} if before else {})}
        resp = requests.get(
            sc.gateway.api.base + "/api/sms/inbox", params=params, headers={"X-API-Key": sc.api_key}, timeout=10
        )
        resp.raise_for_status()
        body = resp.json()
        for m in body["messages"]:
            out[m["message"]] = out.get(m["message"], 0) + 1
        if not body["pagination"]["has_more"] or not body["messages"]:
            return out
        before = body["messages"][-1]["id"]
    raise AssertionError("the inbox has more pages than the scenario sent")


class InboxWatch:
    """When each text first showed in the inbox, looked at every half second
    (the rows' own times are the network's and the SIM's, not the gateway's)."""

    def __init__(self, sc: Scenario, token: str):
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sc, token), daemon=True)
        self._thread.start()

    def _run(self, sc: Scenario, token: str) -> None:
        while not self._stop.wait(0.5):  # the watch's resolution
            try:
                texts = inbox_texts(sc, token)
            except requests.RequestException:
                continue  # the API is being killed: look again
            now = time.time()
            for text in texts:
                self.first_seen.setdefault(text, now)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(15)
        return self.first_seen


def still_on_sims(sc: Scenario) -> set[str]:
    texts = set()
    for modem in sc.gateway.modems:
        for stored in requests.get(modem.control + "/stored", timeout=5).json():
            try:
                decoded = pducodec.decode(stored["pdu"])
            except pducodec.PduError:
                continue
            texts.add(getattr(decoded, "text", ""))
    return texts


def test_inbound_sms_across_api_and_broker_restarts_are_recorded_once(scenario):
    sc: Scenario = scenario("inbound_restarts")
    token = f"in{int(time.time()) % 100000}"
    injected: list[Injected] = []

    def inject_all():
        start = time.monotonic()
        for i in range(MESSAGES):
            delay = start + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the network's arrivals
            text = f"chaos inbound {token} #{i:04d}"
            sc.gateway.modems[i % 2].post("/inject", {"sender": f"+4915{i:08d}", "text": text})
            injected.append(Injected(text, time.time()))

    watch = InboxWatch(sc, token)
    feeder = threading.Thread(target=inject_all, daemon=True)
    feeder.start()
    wait_until(lambda: len(injected) >= MESSAGES // 3, 120, 0.1, "a third of the SMS injected")
    sc.fault(in_flight=0)
    sc.gateway.api.kill()
    sc.gateway.api.start(sc.gateway.env)
    sc.gateway.api.wait_ready()
    wait_until(lambda: len(injected) >= 2 * MESSAGES // 3, 120, 0.1, "two thirds of the SMS injected")
    sc.services.mosquitto.restart()
    sc.services.mosquitto.ready()
    sc.recovered()
    feeder.join(MESSAGES / RATE + 60)
    assert not feeder.is_alive(), "the injections did not finish"

    deadline = max(i.at for i in injected) + 30
    # Not wait_until: running out of time is a verdict (lost or stuck), not an error.
    while time.time() < deadline and len(watch.first_seen) < len(injected):
        time.sleep(0.5)
    seen = watch.stop()
    row = reconcile_inbound(
        Row(sc.name), injected, inbox_texts(sc, token), seen, still_on_sims(sc), sc.recovered_at, time.time()
    )
    row.seconds = time.time() - sc.started
    row.load = os.getloadavg()[0]
    sc.rows.append(row)
    passes(row)
