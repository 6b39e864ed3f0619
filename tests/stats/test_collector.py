"""The collector samples the host, writes to Postgres, serves /metrics and
stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from support.mqtt import Listener
from support.private_mosquitto import PrivateMosquitto
from support.services import MQTT_HOST, MQTT_PORT
from support.tcp_reset import ResettingRelay
from support.tls import make_server_tls
from support.waits import wait_until

from smsgw_common.settings import SettingsError
from smsgw_common.topics import Topics
from smsgw_stats.sampler import HostSampler, read_net_dev, read_thermal
from smsgw_stats.service import Collector
from smsgw_stats.settings import StatsSettings, parse_duration
from smsgw_stats.store import libpq_url

from .test_components import connected_bus

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5000      50    0    0    0     0          0         0     7000      60    0    0    0     0       0          0
 wlan0:  300       3    0    0    0     0          0         0      400       4    0    0    0     0       0          0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> str:
    """SIGTERM, as Compose stops it; its output."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=5)[0]


def test_a_sample_has_the_host_figures(tmp_path):
    thermal = tmp_path / "temp"
    thermal.write_text("48312\n")  # what a Pi's thermal_zone0/temp holds: millidegrees
    sampler = HostSampler(disk_path=str(tmp_path), thermal_path=str(thermal))
    first = sampler.sample(now=time.time())
    data = sampler.sample(now=time.time() + 10)
    assert len(data["cpu"]["per_core"]) == data["cpu"]["count"] >= 1
    assert 0 <= data["cpu"]["percent"] <= 100
    assert data["memory"]["total"] > data["memory"]["available"] > 0
    assert data["disk"]["path"] == str(tmp_path) and data["disk"]["total"] > 0
    assert data["temperature"] == {"celsius": 48.3}
    assert data["uptime"]["seconds"] > 0
    assert "rx_bps" not in first["net"] and data["net"]["rx_bps"] >= 0  # a rate needs two readings


def test_without_a_thermal_zone_there_is_no_made_up_temperature(tmp_path):
    assert read_thermal(str(tmp_path / "missing")) is None
    (tmp_path / "garbage").write_text("n/a")
    assert read_thermal(str(tmp_path / "garbage")) is None


def test_with_host_proc_the_figures_come_from_the_mounted_proc(tmp_path):
    """A container sees the host through HOST_PROC: build a fake one whose
    memory size no real machine has, and check that it is what is reported."""
    import shutil

    import psutil

    proc = tmp_path / "proc"
    (proc / "1" / "net").mkdir(parents=True)
    for name in ("stat", "vmstat"):
        shutil.copy(f"/proc/{name}", proc / name)
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    fake = {"MemTotal": 123456, "MemFree": 23456, "MemAvailable": 100000}
    lines = [f"{key}:{' ' * 8}{fake[key]} kB" if (key := line.split(":")[0]) in fake else line for line in meminfo]
    (proc / "meminfo").write_text("\n".join(lines) + "\n")
    (proc / "1" / "net" / "dev").write_text(NET_DEV)
    try:
        data = HostSampler(disk_path=str(tmp_path), host_proc=str(proc)).sample()
    finally:
        psutil.PROCFS_PATH = "/proc"
    assert data["memory"]["total"] == 123456 * 1024
    assert data["memory"]["available"] == 100000 * 1024
    assert (data["net"]["rx_bytes"], data["net"]["tx_bytes"]) == (5300, 7400)


def test_network_counters_skip_loopback(tmp_path):
    path = tmp_path / "dev"
    path.write_text(NET_DEV)
    assert read_net_dev(str(path)) == (5300, 7400)


def test_settings_refuse_bad_values_with_the_variable_named(service_env, tmp_path):
    with pytest.raises(SettingsError, match="STATS_INTERVAL"):
        StatsSettings.from_env({**service_env, "STATS_INTERVAL": "often"})
    with pytest.raises(SettingsError, match="STATS_RAW_RETENTION"):
        StatsSettings.from_env({**service_env, "STATS_RAW_RETENTION": "2m"})
    with pytest.raises(SettingsError, match="STATS_DISK_PATH"):
        StatsSettings.from_env({**service_env, "STATS_DISK_PATH": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="HOST_PROC"):
        StatsSettings.from_env({**service_env, "HOST_PROC": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="STATS_5M_RETENTION"):
        StatsSettings.from_env({**service_env, "STATS_5M_RETENTION": "a week"})
    assert parse_duration("X", "7d") == 7 * 86400
    assert parse_duration("X", "90") == 90


def test_the_process_exits_with_a_clear_message_on_bad_settings(service_env, python):
    proc = subprocess.run(
        [python, "-m", "smsgw_stats"],
        env={**service_env, "STATS_INTERVAL": "often"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "STATS_INTERVAL must be a number" in proc.stderr


def test_samples_wait_in_memory_while_the_database_is_down(service_env, engine, clean):
    # Port 9 (discard) refuses connections at once on 127.0.0.1.
    down = "postgresql+psycopg2://postgres@127.0.0.1:9/none"
    settings = StatsSettings.from_env({**service_env, "STATS_METRICS_PORT": "0", "DATABASE_URL": down})
    collector = Collector(settings)
    collector.sample_once()
    collector.sample_once()
    assert collector.flush() is False
    assert len(collector.pending) == 2
    assert collector.latest.db_errors == 1

    collector.store.url = libpq_url(service_env["DATABASE_URL"])  # the database is back
    assert collector.flush() is True
    assert len(collector.pending) == 0
    collector.store.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM stat_samples WHERE resolution = 0")).scalar() == 2


def test_the_collector_process_stores_samples_serves_metrics_and_stops_on_sigterm(service_env, python, engine, clean):
    port = free_port()
    env = {
        **service_env,
        "STATS_INTERVAL": "0.5",
        "STATS_FLUSH_INTERVAL": "0.5",
        "STATS_SELF_INTERVAL": "0.5",
        "STATS_METRICS_PORT": str(port),
        "STATS_METRICS_ADDR": "127.0.0.1",
    }
    # A modem's retained state, as a worker leaves it on the broker.
    prefix = service_env["MQTT_PREFIX"] + "collector-process/"
    env["MQTT_PREFIX"] = prefix
    topics = Topics(prefix)
    worker_bus = connected_bus(prefix, "worker")
    state = b'{"modem_id": "usb9", "online": true, "ts": "2026-01-01T00:00:00Z", "signal_dbm": -77, "registration": "roaming"}'
    worker_bus.client.publish(topics.state("usb9"), state, qos=1, retain=True).wait_for_publish(5)
    proc = subprocess.Popen(
        [python, "-m", "smsgw_stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:

        def stored_sample():
            assert proc.poll() is None, f"the collector exited ({proc.returncode})"
            with engine.connect() as conn:
                return conn.execute(
                    text(
                        "SELECT data FROM stat_samples WHERE source = 'host' AND resolution = 0 "
                        "AND data->'components' ? 'stats-collector' AND data->'modems' ? 'usb9' "
                        "ORDER BY ts DESC LIMIT 1"
                    )
                ).scalar()

        sample = wait_until(stored_sample, 20, 0.2, "a stored sample with the collector's own figures")
        assert sample["memory"]["total"] > 0
        assert sample["components"]["stats-collector"]["rss_bytes"] > 0
        assert sample["modems"]["usb9"] == {"online": True, "signal_dbm": -77, "registration": "roaming"}

        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert families["smsgw_host_memory_total_bytes"].samples[0].value == sample["memory"]["total"]
        assert families["smsgw_host_cpu_usage_ratio"].samples[0].value <= 1.0
        assert families["smsgw_host_network_receive_bytes"].type == "counter"
        rss = {s.labels["component"]: s.value for s in families["smsgw_component_resident_memory_bytes"].samples}
        assert rss["stats-collector"] > 0
    finally:
        # Leave the broker clean: an empty retained message deletes the state.
        worker_bus.client.publish(topics.state("usb9"), b"", qos=1, retain=True).wait_for_publish(5)
        worker_bus.stop()
        out = stop(proc)
    assert proc.returncode == 0, out
    assert '"msg": "collector stopped"' in out


def test_a_ca_file_alone_turns_tls_on_and_the_collector_reports_over_it(service_env, python, tmp_path):
    """MQTT_CA_FILE without MQTT_TLS means TLS (MqttSettings), as at an edge
    node verifying its centre's broker; the collector used to keep `ssl` out
    unless MQTT_TLS was set, and died at start."""
    tls = make_server_tls(tmp_path / "tls", "127.0.0.2")
    broker = PrivateMosquitto(listen="127.0.0.2", tls=tls)
    prefix = service_env["MQTT_PREFIX"] + "collector-tls/"
    env = {
        **service_env,
        "MQTT_HOST": "127.0.0.2",
        "MQTT_PORT": str(broker.port),
        "MQTT_CA_FILE": str(tls.ca),
        "MQTT_PREFIX": prefix,
        "STATS_SELF_INTERVAL": "0.5",
        "STATS_METRICS_PORT": str(free_port()),
        "STATS_METRICS_ADDR": "127.0.0.1",
    }
    env.pop("MQTT_TLS", None)
    listener = Listener([Topics(prefix).stats("stats-collector")], port=broker.port)
    proc = subprocess.Popen(
        [python, "-m", "smsgw_stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:

        def reported():
            assert proc.poll() is None, f"the collector exited ({proc.returncode}): {proc.stdout.read()}"
            return listener.payloads(Topics(prefix).stats("stats-collector"))

        wait_until(reported, 20, 0.2, "the collector's own figures, published over TLS")
    finally:
        listener.close()
        stop(proc)
        broker.close()


def test_the_collector_reconnects_after_its_broker_connection_is_reset(service_env, python):
    """A reset connection (a NAT that forgot it, a rebooted peer) must end in a
    reconnect, not in a dead MQTT thread inside a process that looks healthy."""
    relay = ResettingRelay((MQTT_HOST, MQTT_PORT))
    prefix = service_env["MQTT_PREFIX"] + "collector-reset/"
    topic = Topics(prefix).stats("stats-collector")
    env = {
        **service_env,
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(relay.port),
        "MQTT_PREFIX": prefix,
        "STATS_SELF_INTERVAL": "0.5",
        "STATS_METRICS_PORT": str(free_port()),
        "STATS_METRICS_ADDR": "127.0.0.1",
    }
    listener = Listener([topic])
    proc = subprocess.Popen(
        [python, "-m", "smsgw_stats"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:

        def reports() -> int:
            assert proc.poll() is None, f"the collector exited ({proc.returncode})"
            return len(listener.payloads(topic))

        wait_until(reports, 20, 0.2, "the collector's own figures")
        assert relay.reset() == 1
        before = reports()
        wait_until(lambda: relay.accepted == 2 and reports() > before + 2, 20, 0.2, "figures after the reset")
    finally:
        listener.close()
        relay.close()
        out = stop(proc)
    assert "Traceback" not in out, out
