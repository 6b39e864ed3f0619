"""A Postgres cluster of the test's own, to stop and start at will (the
shared one is never touched): initdb into a temporary directory (as the
`postgres` user when run as root, since initdb refuses root), on a port of
its range (support.ports), stopped and removed at the end."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .ports import free_port
from .tls import ServerTls


def pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("initdb not found: install Debian's postgresql package")
    return Path(initdb).parent


class PrivatePostgres:
    def __init__(
        self,
        listen: str | None = None,
        trust: str | None = None,
        max_connections: int = 100,
        tls: ServerTls | None = None,
        passwords: bool = False,
    ) -> None:
        """`listen`: an address to serve on besides 127.0.0.1 (a test WAN's
        centre), `trust`: the network whose clients may connect there, only
        over TLS if `tls` is given. `passwords`: every role but the superuser
        `postgres` logs in over TCP with its password (SCRAM), as in the
        stack (postgres/setup.py's roles)."""
        self.listen = ",".join(a for a in ("127.0.0.1", listen) if a)
        self.max_connections = max_connections
        self.tls_opts = ""
        self.bindir = pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="smsgw-private-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.port = free_port("25400-25499")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        if tls:
            # Postgres reads its key only if the server's user owns it, mode 0600.
            for src, name in ((tls.cert, "server.pem"), (tls.key, "server.key")):
                shutil.copy(src, self.dir / name)
                (self.dir / name).chmod(0o600)
                if self.user:
                    os.chown(self.dir / name, pw.pw_uid, pw.pw_gid)
            self.tls_opts = f" -c ssl=on -c ssl_cert_file={self.dir}/server.pem -c ssl_key_file={self.dir}/server.key"
        if passwords:
            # First match wins: these come before initdb's own trust lines.
            hba_path = self.data / "pg_hba.conf"
            rules = "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
            hba_path.write_text(rules + hba_path.read_text())
        if trust:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"{'hostssl' if tls else 'host'} all all {trust} trust\n")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=120)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg2://postgres@{host}:{self.port}/{database}"

    def socket_url(self, database: str) -> str:
        """The superuser over the Unix socket: what pg_hba's `local` lines govern."""
        return f"postgresql+psycopg2://postgres@/{database}?host={self.dir}&port={self.port}"

    def use_hba(self, path: Path) -> None:
        """Replace pg_hba.conf with `path`; a restart, so that no connection
        made afterwards can still meet the old rules (a reload is asynchronous)."""
        shutil.copy(path, self.data / "pg_hba.conf")
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.data / "pg_hba.conf", pw.pw_uid, pw.pw_gid)
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.start()

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={self.listen} -c fsync=off"
        opts += f" -c max_connections={self.max_connections}{self.tls_opts}"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w", "-t", "60", "start")

    def stop_immediately(self) -> None:
        """A crash, as far as clients can tell: every connection cut at once."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.admin_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def db_setup(self, database: str = "smsgw") -> dict[str, str]:
        """The stack's own db-setup (postgres/setup.py) on a new database:
        every service's role with a password of its own (returned, by
        variable name), the migrations, the grants, the provisioning of
        edge nodes' roles. Use `passwords=True` so that they are needed."""
        passwords = {
            var: secrets.token_urlsafe(24)
            for var in (
                "POSTGRES_OWNER_PASSWORD",
                "POSTGRES_API_PASSWORD",
                "POSTGRES_WORKER_PASSWORD",
                "POSTGRES_COLLECTOR_PASSWORD",
            )
        }
        self.create_database(database)
        env = {
            **os.environ,
            **passwords,
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_DB": database,
            "POSTGRES_SUPERUSER": "postgres",
            "POSTGRES_SUPERUSER_PASSWORD": "trusted-locally",  # pg_hba trusts postgres on 127.0.0.1
        }
        setup = Path(__file__).resolve().parents[2] / "postgres" / "setup.py"
        done = subprocess.run([sys.executable, str(setup)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return passwords

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop_immediately()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
