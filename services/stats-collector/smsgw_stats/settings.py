"""Collector settings from the environment.

Durations accept seconds or a unit suffix: `90`, `90s`, `5m`, `24h`, `7d`.
Retention is three tiers: raw samples, 5-minute averages and hourly averages;
each tier is rolled up from the one before it, so a tier must be kept at least
as long as the next tier's bucket, or samples would expire before they are
averaged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from smsgw_common.settings import CommonSettings, SettingsError, env_float, env_int, env_str

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(name: str, raw: str) -> int:
    match = _DURATION.match(raw)
    if not match:
        raise SettingsError(f"{name} must be a duration such as 90, 90s, 5m, 24h or 7d; got {raw!r}")
    seconds = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if seconds <= 0:
        raise SettingsError(f"{name} must be positive; got {raw!r}")
    return seconds


def env_duration(name: str, default: str, environ=None) -> int:
    return parse_duration(name, env_str(name, default, environ))


@dataclass(frozen=True)
class Tier:
    resolution: int  # seconds per sample; 0 = raw
    retention: int  # seconds


@dataclass(frozen=True)
class StatsSettings:
    common: CommonSettings
    source: str = "host"
    interval: float = 10.0
    flush_interval: float = 30.0
    maintenance_interval: float = 300.0
    disk_path: str = "/"
    host_proc: str | None = None
    host_sys: str | None = None
    thermal_path: str | None = None
    metrics_port: int = 9102  # 0 = no /metrics server
    metrics_addr: str = "0.0.0.0"
    component_ttl: int = 300
    self_interval: float = 30.0
    tiers: tuple[Tier, ...] = (Tier(0, 86400), Tier(300, 7 * 86400), Tier(3600, 90 * 86400))

    @classmethod
    def from_env(cls, environ=None) -> StatsSettings:
        environ = os.environ if environ is None else environ
        host_proc = environ.get("HOST_PROC") or None
        host_sys = environ.get("HOST_SYS") or None
        thermal_default = f"{host_sys or '/sys'}/class/thermal/thermal_zone0/temp"
        settings = cls(
            common=CommonSettings.from_env("stats-collector", environ),
            source=env_str("STATS_SOURCE", "host", environ),
            interval=env_float("STATS_INTERVAL", 10.0, environ),
            flush_interval=env_float("STATS_FLUSH_INTERVAL", 30.0, environ),
            maintenance_interval=env_float("STATS_MAINTENANCE_INTERVAL", 300.0, environ),
            disk_path=env_str("STATS_DISK_PATH", "/", environ),
            host_proc=host_proc,
            host_sys=host_sys,
            thermal_path=env_str("STATS_THERMAL_PATH", thermal_default, environ),
            metrics_port=env_int("STATS_METRICS_PORT", 9102, environ),
            metrics_addr=env_str("STATS_METRICS_ADDR", "0.0.0.0", environ),
            component_ttl=env_duration("STATS_COMPONENT_TTL", "5m", environ),
            self_interval=env_float("STATS_SELF_INTERVAL", 30.0, environ),
            tiers=(
                Tier(0, env_duration("STATS_RAW_RETENTION", "1d", environ)),
                Tier(300, env_duration("STATS_5M_RETENTION", "7d", environ)),
                Tier(3600, env_duration("STATS_1H_RETENTION", "90d", environ)),
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0.5 <= self.interval <= 3600:
            raise SettingsError(f"STATS_INTERVAL must be between 0.5 and 3600 seconds; got {self.interval}")
        if self.flush_interval < 0:
            raise SettingsError("STATS_FLUSH_INTERVAL must not be negative")
        if self.maintenance_interval <= 0:
            raise SettingsError("STATS_MAINTENANCE_INTERVAL must be positive")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"STATS_METRICS_PORT must be a TCP port (0 disables it); got {self.metrics_port}")
        if not os.path.isdir(self.disk_path):
            raise SettingsError(f"STATS_DISK_PATH={self.disk_path} is not a directory")
        if self.host_proc and not os.path.isdir(self.host_proc):
            raise SettingsError(f"HOST_PROC={self.host_proc} is not a directory (mount the host's /proc there)")
        names = ("STATS_RAW_RETENTION", "STATS_5M_RETENTION", "STATS_1H_RETENTION")
        for (tier, name), nxt in zip(zip(self.tiers, names), self.tiers[1:]):
            if tier.retention < nxt.resolution:
                raise SettingsError(
                    f"{name} must be at least {nxt.resolution} s, or samples expire before they are averaged"
                )
