"""A WAN of the test's own: a centre in this network namespace and edge
nodes each in a namespace the test makes, joined by a bridge, with links
that fail the way a site's uplink does.

A cut is a black hole, not a reset: iptables in the node's namespace drops
every packet to and from the centre's service ports, so a connection in
flight neither fails nor finishes, it retransmits, as behind a dead mobile
router. Traffic to other ports (an emulator's control server) still flows,
so the test can act on the node while it is cut off.

Needs root, iproute2 and iptables (scripts/test.sh installs them). Every
name carries a random tag, and `close` removes the namespaces (and with
them their veths) and the bridge.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from collections.abc import Sequence


def _ip(*args: str, netns: str | None = None) -> str:
    argv = [*(["ip", "netns", "exec", netns] if netns else []), "ip", *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20).stdout


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no route of this machine touches."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = []
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        if word and word[0].isdigit():
            try:
                used.append(ipaddress.ip_network(word if "/" in word else word + "/32", strict=False))
            except ValueError:
                continue
    for _ in range(100):
        net = ipaddress.ip_network(f"10.{200 + secrets.randbelow(8)}.{secrets.randbelow(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 10.200.0.0/13 for the test WAN")


class Wan:
    def __init__(self, nodes: int) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the test WAN makes network namespaces and iptables rules: run the tests as root")
        self.tag = secrets.token_hex(2)
        self.net = _free_subnet()
        hosts = list(self.net.hosts())
        self.centre = str(hosts[0])
        self.bridge = f"sgw{self.tag}b"
        self.namespaces: list[str] = []
        self.addresses: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.centre}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for n in range(nodes):
                self._add_node(n, str(hosts[10 + n]))
        except BaseException:
            self.close()
            raise

    def _add_node(self, n: int, address: str) -> None:
        ns, veth = f"sgw{self.tag}n{n}", f"sgw{self.tag}v{n}"
        _ip("netns", "add", ns)
        self.namespaces.append(ns)
        self.addresses.append(address)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("addr", "add", f"{address}/24", "dev", "eth0", netns=ns)
        _ip("link", "set", "eth0", "up", netns=ns)
        _ip("link", "set", "lo", "up", netns=ns)

    def inside(self, node: int, argv: Sequence[str]) -> list[str]:
        """`argv` run in the node's namespace."""
        return ["ip", "netns", "exec", self.namespaces[node], *argv]

    def _iptables(self, node: int, *args: str) -> None:
        subprocess.run(self.inside(node, ["iptables", "-w", *args]), check=True, capture_output=True, timeout=20)

    def cut(self, node: int, ports: Sequence[int]) -> None:
        """Black-hole the node's traffic with the centre's `ports`, both ways."""
        for port in ports:
            self._iptables(node, "-A", "OUTPUT", "-d", self.centre, "-p", "tcp", "--dport", str(port), "-j", "DROP")
            self._iptables(node, "-A", "INPUT", "-s", self.centre, "-p", "tcp", "--sport", str(port), "-j", "DROP")

    def restore(self, node: int) -> None:
        self._iptables(node, "-F", "OUTPUT")
        self._iptables(node, "-F", "INPUT")

    def close(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=20)
