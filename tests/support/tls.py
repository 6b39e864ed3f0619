"""A certificate authority of the test's own and a server certificate it
signed for one address: what an operator's centre presents to edge nodes
over the WAN (docs/deployment.md, "Several sites"). Made with the openssl
command line; valid for two days."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerTls:
    ca: Path  # what a client verifies the server with
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_server_tls(directory: Path, address: str) -> ServerTls:
    """A CA, and a certificate for `address` (an IP) signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=smsgw test CA",
        cwd=directory,
    )
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=smsgw centre", cwd=directory)
    (directory / "san.cnf").write_text(f"subjectAltName=IP:{address}\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf", cwd=directory,
    )  # fmt: skip
    (directory / "server.key").chmod(0o600)
    return ServerTls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
