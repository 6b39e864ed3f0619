"""A Mosquitto of the test's own, on 127.0.0.1 and, for a test WAN, on its
centre's address: anonymous, since only this machine and the namespaces the
test made can reach it (the compose stack's broker has users and ACLs:
tests/board/test_broker_access.py, tests/stack/test_least_privilege.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from .ports import free_port
from .tls import ServerTls
from .waits import wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class PrivateMosquitto:
    def __init__(self, listen: str | None = None, tls: ServerTls | None = None) -> None:
        """`listen`: an address to serve on besides 127.0.0.1 (a test WAN's
        centre), only over TLS if `tls` is given."""
        self.port = free_port("25500-25599")
        self.dir = Path(tempfile.mkdtemp(prefix="smsgw-mosquitto-"))
        listeners = f"listener {self.port} 127.0.0.1\n"
        if listen:
            listeners += f"listener {self.port} {listen}\n"
            if tls:
                listeners += f"cafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
        conf = self.dir / "mosquitto.conf"
        # As root it would switch to the user `mosquitto`, who cannot read the test's key.
        conf.write_text(f"per_listener_settings false\nallow_anonymous true\npersistence false\nuser root\n{listeners}")
        with open(self.dir / "mosquitto.log", "wb") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._accepts, 10, 0.05, lambda: f"mosquitto on {self.port}: {self.log()}")

    def _accepts(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return (self.dir / "mosquitto.log").read_text(errors="replace")[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
