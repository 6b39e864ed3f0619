"""One host sample: CPU, load, memory, swap, disk, temperature, uptime, network.

In a container the host's figures come from its /proc mounted at HOST_PROC
(psutil reads everything below `psutil.PROCFS_PATH`). Network counters are
per network namespace: `HOST_PROC/net` would follow `self` into the
collector's own namespace, so with HOST_PROC set they are read from
`HOST_PROC/1/net/dev`, the namespace of the host's init.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime

import psutil

log = logging.getLogger(__name__)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def read_net_dev(path: str) -> tuple[int, int]:
    """Bytes received and sent on all interfaces but loopback, from a
    /proc/<pid>/net/dev file."""
    rx = tx = 0
    with open(path, encoding="ascii") as fh:
        for line in fh.readlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                continue
            fields = rest.split()
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def read_thermal(path: str | None) -> float | None:
    """Degrees Celsius from a sysfs thermal zone (millidegrees), or None."""
    if not path:
        return None
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip()) / 1000.0
    except (OSError, ValueError):
        return None


class HostSampler:
    def __init__(self, disk_path: str = "/", host_proc: str | None = None, thermal_path: str | None = None):
        self.disk_path = disk_path
        self.host_proc = host_proc
        self.thermal_path = thermal_path
        if host_proc:
            psutil.PROCFS_PATH = host_proc
        self._net_prev: tuple[float, int, int] | None = None
        self._sensors_ok = hasattr(psutil, "sensors_temperatures")
        # cpu_percent(None) measures since the previous call; prime it so the
        # first real sample covers one interval instead of returning 0.0.
        psutil.cpu_percent(percpu=True)

    def _net(self) -> tuple[int, int] | None:
        try:
            if self.host_proc:
                return read_net_dev(os.path.join(self.host_proc, "1", "net", "dev"))
            counters = psutil.net_io_counters(pernic=True)
            rx = sum(c.bytes_recv for name, c in counters.items() if name != "lo")
            tx = sum(c.bytes_sent for name, c in counters.items() if name != "lo")
            return rx, tx
        except (OSError, ValueError, IndexError) as exc:
            log.debug("network counters unavailable: %s", exc)
            return None

    def _temperature(self) -> float | None:
        value = read_thermal(self.thermal_path)
        if value is not None or not self._sensors_ok:
            return value
        try:
            sensors = psutil.sensors_temperatures()
        except (OSError, RuntimeError):
            self._sensors_ok = False
            return None
        readings = [t.current for entries in sensors.values() for t in entries if t.current]
        if not readings:
            # No sensor now means none later: stop scanning sysfs every sample.
            self._sensors_ok = False
            return None
        return max(readings)

    def sample(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        per_core = psutil.cpu_percent(percpu=True)
        # The load average is not namespaced: the kernel's figure is the host's.
        load1, load5, load15 = os.getloadavg()
        mem = psutil.virtual_memory()
        swap = psutil.swap_memory()
        data: dict = {
            "cpu": {
                "percent": _round(sum(per_core) / len(per_core)) if per_core else None,
                "per_core": [_round(p) for p in per_core],
                "count": len(per_core),
                "load1": _round(load1),
                "load5": _round(load5),
                "load15": _round(load15),
            },
            "memory": {
                "total": mem.total,
                "available": mem.available,
                "used": mem.total - mem.available,
                "free": mem.free,
                "percent": _round(mem.percent),
            },
            "swap": {"total": swap.total, "used": swap.used, "free": swap.free, "percent": _round(swap.percent)},
        }
        try:
            disk = psutil.disk_usage(self.disk_path)
            data["disk"] = {
                "path": self.disk_path,
                "total": disk.total,
                "used": disk.used,
                "free": disk.free,
                "percent": _round(disk.percent),
            }
        except OSError as exc:
            log.warning("disk usage of %s unavailable: %s", self.disk_path, exc)
        temperature = self._temperature()
        if temperature is not None:
            data["temperature"] = {"celsius": _round(temperature, 1)}
        boot = psutil.boot_time()
        data["uptime"] = {"boot_time": int(boot), "seconds": int(now - boot)}
        net = self._net()
        if net is not None:
            rx, tx = net
            entry: dict[str, float | None] = {"rx_bytes": rx, "tx_bytes": tx}
            if self._net_prev is not None:
                t0, rx0, tx0 = self._net_prev
                dt = now - t0
                # A counter that went down (interface reset) gives no rate.
                if dt > 0 and rx >= rx0 and tx >= tx0:
                    entry["rx_bps"] = _round((rx - rx0) / dt)
                    entry["tx_bps"] = _round((tx - tx0) / dt)
            self._net_prev = (now, rx, tx)
            data["net"] = entry
        return data


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
