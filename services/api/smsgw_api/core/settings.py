"""API settings, typed, from the environment (see `.env.example`).

`ApiSettings.from_env()` raises `SettingsError` with a message that names the
variable; `python -m smsgw_api serve` prints it and exits instead of starting
with a missing or placeholder secret.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import timedelta

from smsgw_common.settings import (
    CommonSettings,
    SettingsError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
    env_value,
)

__all__ = ["ApiSettings", "PipelineSettings", "SettingsError"]

JWT_MIN_LENGTH = 32


def _hours_or_never(hours: float) -> timedelta | None:
    if hours < 0:
        raise SettingsError("a number of hours must not be negative (0: never)")
    return timedelta(hours=hours) if hours > 0 else None


@dataclass(frozen=True)
class PipelineSettings:
    """The pipeline's work: election, sweeper, webhooks, opt-outs (pipeline/runner.py).

    `background` (PIPELINE_BACKGROUND): auto or on, gunicorn starts the pipeline in
    each API worker; off, it runs elsewhere (`python -m smsgw_api pipeline`)."""

    background: str = "auto"  # auto | on | off: run the leader election in this process
    leader_ttl: float = 10.0
    transports: tuple[str, ...] = ("websocket",)
    socket_reauth_interval: float = 30.0  # re-check open sockets' credentials
    socket_handshake_timeout: float = 5.0  # close an engine.io connection not authenticated by then
    # Live events held while Redis is down (past it, clients are told to
    # reload), and the leader's heartbeat period (core/livefeed.py).
    live_buffer_events: int = 1000
    live_heartbeat: float = 1.0
    report_timeout: timedelta = timedelta(hours=48)
    sweep_interval: float = 5.0
    # A queued message without expires_at expires this long after it was due
    # (DEFAULT_VALIDITY_HOURS; 0: never), a SIM whose modem has been gone this
    # long becomes inactive until it is seen again (SIM_ABSENT_HOURS; 0: never).
    default_validity: timedelta | None = timedelta(hours=24)
    sim_absent_after: timedelta | None = timedelta(hours=24)
    webhook_allow_private: bool = True  # LAN ranges: 10/8, 172.16/12, 192.168/16, fc00::/7
    webhook_allow_loopback: bool = False  # 127/8, ::1 (a receiver on the gateway itself)
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_base: float = 10.0
    webhook_backoff_max: float = 3600.0
    webhook_concurrency: int = 8
    webhook_poll_interval: float = 1.0
    optout_keywords: tuple[str, ...] = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
    optin_keywords: tuple[str, ...] = ("START", "UNSTOP")

    @classmethod
    def from_env(cls, environ=None) -> PipelineSettings:
        environ = os.environ if environ is None else environ
        background = env_str("PIPELINE_BACKGROUND", "auto", environ).lower()
        if background not in {"auto", "on", "off", "1", "0", "true", "false"}:
            raise SettingsError("PIPELINE_BACKGROUND must be auto, on or off")
        background = {"1": "on", "true": "on", "0": "off", "false": "off"}.get(background, background)
        live_buffer_events = env_int("LIVE_BUFFER_EVENTS", 1000, environ)
        if live_buffer_events < 0:
            raise SettingsError("LIVE_BUFFER_EVENTS must be 0 or more (0: hold none, clients reload after an outage)")
        live_heartbeat = env_float("LIVE_HEARTBEAT_SECONDS", 1.0, environ)
        if not 0.1 <= live_heartbeat <= 60:
            raise SettingsError("LIVE_HEARTBEAT_SECONDS must be between 0.1 and 60")
        return cls(
            background=background,
            leader_ttl=env_float("LEADER_TTL_SECONDS", 10.0, environ),
            transports=tuple(env_list("SOCKETIO_TRANSPORTS", "websocket", environ)),
            socket_reauth_interval=env_float("SOCKETIO_REAUTH_SECONDS", 30.0, environ),
            socket_handshake_timeout=env_float("SOCKETIO_HANDSHAKE_SECONDS", 5.0, environ),
            live_buffer_events=live_buffer_events,
            live_heartbeat=live_heartbeat,
            report_timeout=timedelta(seconds=env_float("REPORT_TIMEOUT", 48 * 3600, environ)),
            sweep_interval=env_float("SWEEP_INTERVAL_SECONDS", 5.0, environ),
            default_validity=_hours_or_never(env_float("DEFAULT_VALIDITY_HOURS", 24.0, environ)),
            sim_absent_after=_hours_or_never(env_float("SIM_ABSENT_HOURS", 24.0, environ)),
            webhook_allow_private=env_bool("WEBHOOK_ALLOW_PRIVATE", True, environ),
            webhook_allow_loopback=env_bool("WEBHOOK_ALLOW_LOOPBACK", False, environ),
            webhook_timeout=env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0, environ),
            webhook_max_attempts=env_int("WEBHOOK_MAX_ATTEMPTS", 8, environ),
            webhook_backoff_base=env_float("WEBHOOK_BACKOFF_SECONDS", 10.0, environ),
            webhook_backoff_max=env_float("WEBHOOK_BACKOFF_MAX_SECONDS", 3600.0, environ),
            webhook_concurrency=env_int("WEBHOOK_CONCURRENCY", 8, environ),
            webhook_poll_interval=env_float("WEBHOOK_POLL_SECONDS", 1.0, environ),
            optout_keywords=tuple(
                k.upper() for k in env_list("OPTOUT_KEYWORDS", "STOP,STOPALL,UNSUBSCRIBE,CANCEL,END,QUIT", environ)
            ),
            optin_keywords=tuple(k.upper() for k in env_list("OPTIN_KEYWORDS", "START,UNSTOP", environ)),
        )


@dataclass(frozen=True)
class ApiSettings:
    common: CommonSettings
    jwt_secret: str
    jwt_ttl_hours: float = 24.0
    cors_allowed_origins: tuple[str, ...] = ()
    max_segments: int = 10
    max_body_bytes: int = 256 * 1024
    default_page_size: int = 50
    max_page_size: int = 200
    max_batch_size: int = 1000
    admin_username: str = "admin"
    admin_password: str | None = None
    login_max_attempts: int = 10  # per username+ip within the window
    login_window_seconds: int = 300
    login_max_attempts_per_address: int = 50  # any usernames, one ip, within the window
    password_hash_concurrency: int = 2  # password hashes running at once per process
    ussd_timeout_seconds: float = 15.0
    routing_cache_seconds: float = 1.0
    db_pool_size: int = 10
    db_max_overflow: int = 20
    api_key_touch_seconds: int = 60  # how often last_used_at is written
    auth_cache_seconds: float = 2.0  # how long a worker trusts a key/user lookup
    trust_proxy: bool = False  # take the client ip from X-Forwarded-For (nginx)
    nodes_broker_file: str | None = None  # edge nodes' broker users, for mosquitto/entrypoint.sh
    # How long an edge node's modem may be unheard before the centre marks it
    # offline (its last will): nodes are given the MQTT keepalive that makes it so.
    node_unreachable_seconds: int = 45
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    extra: dict = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.common.database.url

    @classmethod
    def from_env(cls, environ=None) -> ApiSettings:
        environ = os.environ if environ is None else environ
        common = CommonSettings.from_env("api", environ)
        jwt_secret = env_secret("JWT_SECRET", environ, required=True, min_length=JWT_MIN_LENGTH)
        settings = cls(
            common=common,
            jwt_secret=jwt_secret,
            jwt_ttl_hours=env_float("JWT_TTL_HOURS", 24.0, environ),
            cors_allowed_origins=tuple(env_list("CORS_ALLOWED_ORIGINS", "", environ)),
            max_segments=env_int("MAX_SEGMENTS", 10, environ),
            max_body_bytes=env_int("MAX_BODY_BYTES", 256 * 1024, environ),
            default_page_size=env_int("PAGE_SIZE_DEFAULT", 50, environ),
            max_page_size=env_int("PAGE_SIZE_MAX", 200, environ),
            max_batch_size=env_int("MAX_BATCH_SIZE", 1000, environ),
            admin_username=env_str("ADMIN_USERNAME", "admin", environ),
            admin_password=env_secret("ADMIN_PASSWORD", environ, required=False, min_length=12),
            login_max_attempts=env_int("LOGIN_MAX_ATTEMPTS", 10, environ),
            login_window_seconds=env_int("LOGIN_WINDOW_SECONDS", 300, environ),
            login_max_attempts_per_address=env_int(
                "LOGIN_MAX_ATTEMPTS_PER_ADDRESS", 5 * env_int("LOGIN_MAX_ATTEMPTS", 10, environ), environ
            ),
            password_hash_concurrency=env_int("PASSWORD_HASH_CONCURRENCY", 2, environ),
            ussd_timeout_seconds=env_float("USSD_TIMEOUT_SECONDS", 15.0, environ),
            routing_cache_seconds=env_float("ROUTING_CACHE_SECONDS", 1.0, environ),
            db_pool_size=env_int("API_DB_POOL_SIZE", 10, environ),
            db_max_overflow=env_int("API_DB_MAX_OVERFLOW", 20, environ),
            api_key_touch_seconds=env_int("API_KEY_TOUCH_SECONDS", 60, environ),
            auth_cache_seconds=env_float("AUTH_CACHE_SECONDS", 2.0, environ),
            trust_proxy=env_bool("TRUST_PROXY", False, environ),
            nodes_broker_file=env_value("NODES_BROKER_FILE", environ),
            node_unreachable_seconds=env_int("NODE_UNREACHABLE_SECONDS", 45, environ),
            pipeline=PipelineSettings.from_env(environ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if len(self.jwt_secret) < JWT_MIN_LENGTH:
            raise SettingsError(f"JWT_SECRET must be at least {JWT_MIN_LENGTH} characters long")
        if not 1 <= self.max_segments <= 255:
            raise SettingsError("MAX_SEGMENTS must be between 1 and 255 (a concatenated SMS has at most 255 parts)")
        if self.jwt_ttl_hours <= 0:
            raise SettingsError("JWT_TTL_HOURS must be positive")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise SettingsError("PAGE_SIZE_DEFAULT must be between 1 and PAGE_SIZE_MAX")
        if self.max_body_bytes < 1024:
            raise SettingsError("MAX_BODY_BYTES must be at least 1024")
        if min(self.login_max_attempts, self.login_max_attempts_per_address, self.login_window_seconds) < 1:
            raise SettingsError("LOGIN_MAX_ATTEMPTS(_PER_ADDRESS) and LOGIN_WINDOW_SECONDS must be at least 1")
        if not 15 <= self.node_unreachable_seconds <= 3600:
            raise SettingsError("NODE_UNREACHABLE_SECONDS must be between 15 and 3600")
        if self.password_hash_concurrency < 1:
            raise SettingsError("PASSWORD_HASH_CONCURRENCY must be at least 1")
        if "*" in self.cors_allowed_origins:
            raise SettingsError("CORS_ALLOWED_ORIGINS is an allow-list; '*' is not accepted")

    def with_overrides(self, **kw) -> ApiSettings:
        return replace(self, **kw)
