"""Run the dashboard's nginx config with Debian's nginx, without root or Docker.

Renders nginx/default.conf.template the way the official nginx image does
(envsubst of the listed variables only), wraps it in a minimal main config
with every path inside a private directory, and runs `nginx -p DIR` in the
foreground. Tests and the benchmark import `NginxProcess`; developers run:

    python services/dashboard/devserver.py --port 8080 --api 127.0.0.1:5000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx" / "default.conf.template"
STATIC = HERE / "static"
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
MIME_TYPES = "/etc/nginx/mime.types"

VARIABLES = (
    "API_UPSTREAM",
    "DASHBOARD_LISTEN",
    "DASHBOARD_HTTP_LISTEN",
    "DASHBOARD_PUBLIC_HTTPS_PORT",
    "DASHBOARD_ROOT",
    "TLS_CERT",
    "TLS_KEY",
)


def render(values: dict[str, str], template: str | None = None) -> str:
    """envsubst restricted to our variables: nginx's own $vars stay as they are."""
    text = TEMPLATE.read_text() if template is None else template
    missing = [v for v in VARIABLES if not values.get(v)]
    if missing:
        raise ValueError(f"template variables not set: {', '.join(missing)}")
    out = re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", lambda m: values.get(m.group(1), m.group(0)), text)
    left = re.findall(r"\$\{[A-Z][A-Z0-9_]*\}", out)
    if left:
        raise ValueError(f"template variables without a value: {', '.join(sorted(set(left)))}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory: Path) -> tuple[str, str]:
    """A throwaway certificate: the TLS directives need files even when the
    listener under test is plain HTTP."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return str(cert), str(key)


MAIN_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include {mime};
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/conf.d/*.conf;
}}
"""


class NginxProcess:
    """nginx in the foreground on 127.0.0.1, plain HTTP, in front of `api`."""

    def __init__(self, api: str, port: int | None = None, root: Path = STATIC, workdir: Path | None = None):
        self.api = api
        self.port = port or free_port()
        self.http_port = free_port()
        self.root = Path(root)
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="smsgw-nginx-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        (self.dir / "conf.d").mkdir(parents=True, exist_ok=True)
        cert, key = self_signed(self.dir)
        conf = render(
            {
                "API_UPSTREAM": self.api,
                "DASHBOARD_LISTEN": f"127.0.0.1:{self.port}",
                "DASHBOARD_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
                "DASHBOARD_PUBLIC_HTTPS_PORT": "443",
                "DASHBOARD_ROOT": str(self.root),
                "TLS_CERT": cert,
                "TLS_KEY": key,
            }
        )
        (self.dir / "conf.d" / "default.conf").write_text(conf)
        main = self.dir / "nginx.conf"
        main.write_text(MAIN_CONF.format(dir=self.dir, mime=MIME_TYPES))
        return main

    def start(self, timeout: float = 10.0) -> NginxProcess:
        main = self.write_config()
        test = subprocess.run(
            [NGINX, "-t", "-c", str(main), "-p", str(self.dir)], capture_output=True, text=True, timeout=30
        )
        if test.returncode != 0:
            raise RuntimeError(f"nginx rejected the config:\n{test.stderr}")
        # nginx keeps its own copy of the descriptor; ours can close at once.
        with open(self.dir / "stderr.log", "wb") as stderr:
            self.proc = subprocess.Popen(
                [NGINX, "-c", str(main), "-p", str(self.dir)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.port} within {timeout} s")

    def error_log(self) -> str:
        parts = []
        for name in ("error.log", "stderr.log"):
            p = self.dir / name
            if p.exists():
                parts.append(p.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--api", default="127.0.0.1:5000", help="host:port of the API")
    args = ap.parse_args()
    with NginxProcess(args.api, port=args.port) as n:
        print(f"dashboard on {n.url} (API at {args.api}); Ctrl+C stops", flush=True)
        try:
            n.proc.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
