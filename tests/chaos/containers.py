"""The services the chaos tier kills: its own Postgres, Redis and Mosquitto,
each a container started with testcontainers from the image under its
official tag (the tags docker-compose.yml names). Nothing is ever pulled:
the image must already be on the engine (CI builds stand-ins with
.ci/images/build.sh; a laptop has the real ones), and the reaper container
is off (TESTCONTAINERS_RYUK_DISABLED, set in conftest.py): `remove()` here
and the session fixture clean up instead.

Each container publishes its port on 127.0.0.1 only, at a fixed host port,
so a killed and restarted container is found where the gateway left it.
Every one has a fresh random password: no default credentials even here.
"""

from __future__ import annotations

import secrets
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import docker
from support.waits import wait_until
from testcontainers.core.container import DockerContainer

# docker-compose.yml's tags: the tier runs what the stack runs.
POSTGRES_IMAGE = "postgres:16-alpine"
REDIS_IMAGE = "redis:7-alpine"
MOSQUITTO_IMAGE = "eclipse-mosquitto:2"
LABEL = "smsgw.chaos"  # every container of the tier, for the leftover sweep

MOSQUITTO_CONF = """\
per_listener_settings false
allow_anonymous false
password_file /mosquitto/config/passwd
listener 1883
persistence true
persistence_location /mosquitto/data/
log_dest stdout
log_type error
"""


class ImageMissing(RuntimeError):
    pass


def require_image(client: docker.DockerClient, tag: str) -> None:
    """Refuse to start rather than let anything reach for a registry."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise ImageMissing(
            f"image {tag} is not on this engine; the chaos tier never pulls. "
            "Build the stand-ins with .ci/images/build.sh (CI) or load the official image."
        ) from None


def wait_port(port: int, timeout: float) -> None:
    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    wait_until(listening, timeout, 0.2, f"something to listen on 127.0.0.1:{port}", ignore=(OSError,))


@dataclass
class Service(ABC):
    """One container: start once, then kill / stop / start it like an operator would."""

    name: str
    image: str
    port: int  # host port on 127.0.0.1
    container_port: int
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    run_id: str = ""
    container: DockerContainer | None = None

    @abstractmethod
    def build(self) -> DockerContainer:
        """The container, not started yet (each service's image, command and port)."""

    def create_options(self) -> dict:
        return {}

    def start(self, client: docker.DockerClient) -> None:
        require_image(client, self.image)
        c = self.build()
        # On 127.0.0.1 only (with_bind_ports takes no address): handed to the docker SDK as is.
        c.ports[f"{self.container_port}/tcp"] = ("127.0.0.1", self.port)  # type: ignore[assignment]
        c.with_kwargs(labels={LABEL: self.run_id}, **self.create_options())
        self.container = c.start()

    def _raw(self):
        assert self.container is not None
        return self.container.get_wrapped_container()

    def kill(self, signal: str = "SIGKILL") -> None:
        self._raw().kill(signal=signal)

    def wait_exited(self, timeout: float = 30) -> None:
        self._raw().wait(timeout=timeout)

    def ensure_running(self) -> None:
        raw = self._raw()
        raw.reload()
        if raw.status != "running":
            raw.start()

    def restart(self) -> None:
        """`docker restart`: SIGTERM, then the same container started again."""
        self._raw().restart(timeout=10)

    def resume(self) -> None:
        """Start the same container again (its filesystem kept, as a restart policy does)."""
        self._raw().start()

    def ready(self, timeout: float = 60) -> None:
        wait_port(self.port, timeout)

    def remove(self) -> None:
        if self.container is not None:
            try:
                self._raw().remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            self.container = None


class Postgres(Service):
    def build(self) -> DockerContainer:
        return DockerContainer(self.image).with_env("POSTGRES_PASSWORD", self.password)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def ready(self, timeout: float = 90) -> None:
        import psycopg2

        def accepting() -> bool:
            psycopg2.connect(self.admin_url, connect_timeout=2).close()
            return True

        wait_until(accepting, timeout, 0.3, f"Postgres on port {self.port}", ignore=(psycopg2.OperationalError,))

    def stop_immediately(self) -> None:
        """`pg_ctl stop -m immediate`: SIGQUIT to the postmaster, no checkpoint;
        the next start runs crash recovery."""
        self.kill("SIGQUIT")
        self.wait_exited()


class Redis(Service):
    def build(self) -> DockerContainer:
        # No persistence: a killed Redis comes back empty, the case to survive.
        return DockerContainer(self.image).with_command(
            f"redis-server --requirepass {self.password} --save '' --appendonly no"
        )

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def ready(self, timeout: float = 60) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            wait_until(client.ping, timeout, 0.2, f"Redis on port {self.port}", ignore=(redis.RedisError,))
        finally:
            client.close()


class Mosquitto(Service):
    user = "chaos"

    def build(self) -> DockerContainer:
        # The broker as production runs it (no anonymous access, persistence);
        # one user for the tier: the ACLs have their own tests (tests/board, tests/stack).
        script = (
            f"printf '%s' '{MOSQUITTO_CONF}' > /mosquitto/config/chaos.conf"
            f" && mosquitto_passwd -b -c /mosquitto/config/passwd {self.user} {self.password}"
            " && chown mosquitto /mosquitto/config/passwd && chmod 0600 /mosquitto/config/passwd"
            " && exec /usr/sbin/mosquitto -c /mosquitto/config/chaos.conf"
        )
        return DockerContainer(self.image).with_command(["-c", script])

    def create_options(self) -> dict:
        return {"entrypoint": ["sh"]}


def remove_leftovers(client: docker.DockerClient) -> None:
    """Containers of an interrupted run (no reaper): by label, never by name."""
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        c.remove(force=True, v=True)
