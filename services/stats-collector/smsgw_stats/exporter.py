"""The collector's own /metrics: the latest host sample under `smsgw_host_*`
names (modelled on node_exporter's), the components' figures and the
collector's health, in the Prometheus text format (0.0.4).

Values come from the latest sample at scrape time, so a scrape never touches
/proc or the database. The text format and the few lines of HTTP/1.0 it
needs are written by hand on `socketserver`: prometheus_client (2 MB) or
even `http.server` (0.7 MB) are a real share of a process whose whole budget
is 30 MB. The tests parse this output with prometheus_client's own parser.
"""

from __future__ import annotations

import socketserver
import threading

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LatestSample:
    """What the sampling loop last saw, shared with the exporter thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ts: float | None = None
        self.data: dict = {}
        self.pending = 0
        self.db_errors = 0
        self.samples = 0

    def set(self, ts: float, data: dict, pending: int) -> None:
        with self._lock:
            self.ts, self.data, self.pending = ts, data, pending
            self.samples += 1

    def get(self) -> tuple[float | None, dict, int, int, int]:
        with self._lock:
            return self.ts, self.data, self.pending, self.db_errors, self.samples


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value) -> str:
    return repr(float(value))


class Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, doc: str, samples) -> None:
        """samples: iterable of (labels dict, value); None values are skipped,
        and a family with no sample is left out entirely."""
        rows = [(labels, value) for labels, value in samples if value is not None]
        if not rows:
            return
        self.lines.append(f"# HELP {name} {doc}")
        self.lines.append(f"# TYPE {name} {kind}")
        suffix = "_total" if kind == "counter" else ""
        for labels, value in rows:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(
                f"{name}{suffix}{{{label_text}}} {_num(value)}" if label_text else f"{name}{suffix} {_num(value)}"
            )

    def gauge(self, name: str, doc: str, value, labels: dict | None = None) -> None:
        self.metric(name, "gauge", doc, [(labels or {}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(latest: LatestSample) -> str:
    ts, data, pending, db_errors, samples = latest.get()
    out = Exposition()
    cpu = data.get("cpu") or {}
    if cpu.get("percent") is not None:
        out.gauge(
            "smsgw_host_cpu_usage_ratio",
            "Share of all CPU time busy over the last interval (0..1).",
            cpu["percent"] / 100,
        )
    out.metric(
        "smsgw_host_cpu_core_usage_ratio",
        "gauge",
        "Share of one core's time busy over the last interval.",
        [({"cpu": str(i)}, v / 100) for i, v in enumerate(cpu.get("per_core") or []) if v is not None],
    )
    for n in ("1", "5", "15"):
        out.gauge(f"smsgw_host_load{n}", f"{n}-minute load average.", cpu.get(f"load{n}"))
    mem = data.get("memory") or {}
    out.gauge("smsgw_host_memory_total_bytes", "Physical memory.", mem.get("total"))
    out.gauge("smsgw_host_memory_available_bytes", "Memory available without swapping.", mem.get("available"))
    out.gauge("smsgw_host_memory_used_bytes", "Memory in use (total - available).", mem.get("used"))
    swap = data.get("swap") or {}
    out.gauge("smsgw_host_swap_total_bytes", "Swap space.", swap.get("total"))
    out.gauge("smsgw_host_swap_used_bytes", "Swap in use.", swap.get("used"))
    disk = data.get("disk") or {}
    labels = {"path": disk.get("path", "")}
    out.gauge("smsgw_host_filesystem_size_bytes", "Size of the data volume.", disk.get("total"), labels)
    out.gauge("smsgw_host_filesystem_free_bytes", "Free space on the data volume.", disk.get("free"), labels)
    out.gauge("smsgw_host_filesystem_used_bytes", "Used space on the data volume.", disk.get("used"), labels)
    out.gauge("smsgw_host_temperature_celsius", "SoC/CPU temperature.", (data.get("temperature") or {}).get("celsius"))
    uptime = data.get("uptime") or {}
    out.gauge("smsgw_host_boot_time_seconds", "Boot time, Unix seconds.", uptime.get("boot_time"))
    out.gauge("smsgw_host_uptime_seconds", "Seconds since boot.", uptime.get("seconds"))
    net = data.get("net") or {}
    out.metric(
        "smsgw_host_network_receive_bytes",
        "counter",
        "Bytes received, all interfaces but lo.",
        [({}, net.get("rx_bytes"))],
    )
    out.metric(
        "smsgw_host_network_transmit_bytes",
        "counter",
        "Bytes sent, all interfaces but lo.",
        [({}, net.get("tx_bytes"))],
    )
    components = data.get("components") or {}
    out.metric(
        "smsgw_component_resident_memory_bytes",
        "gauge",
        "RSS a service last reported.",
        [({"component": name}, f.get("rss_bytes")) for name, f in components.items()],
    )
    out.metric(
        "smsgw_component_cpu_usage_ratio",
        "gauge",
        "CPU a service used, share of one core (0..1).",
        [
            ({"component": name}, f["cpu_percent"] / 100 if f.get("cpu_percent") is not None else None)
            for name, f in components.items()
        ],
    )
    out.gauge("smsgw_stats_last_sample_timestamp_seconds", "When the last host sample was taken.", ts)
    out.gauge("smsgw_stats_pending_samples", "Samples waiting to be written to the database.", pending)
    out.metric("smsgw_stats_database_errors", "counter", "Failed writes or maintenance passes.", [({}, db_errors)])
    out.metric("smsgw_stats_samples", "counter", "Host samples taken since start.", [({}, samples)])
    return out.text()


class _Handler(socketserver.StreamRequestHandler):
    timeout = 5  # a client that sends nothing does not hold a thread
    latest: LatestSample

    def handle(self):
        try:
            request_line = self.rfile.readline(8192).decode("latin-1")
            for _ in range(100):  # headers: read and ignore, bounded
                if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                    break
        except OSError:
            return
        parts = request_line.split()
        path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            self._send(405, "text/plain", b"only GET /metrics is served here\n", parts[:1] == ["HEAD"])
        elif path not in ("/metrics", "/"):
            self._send(404, "text/plain", b"only /metrics is served here\n", parts[0] == "HEAD")
        else:
            self._send(200, CONTENT_TYPE, render(self.latest).encode(), parts[0] == "HEAD")

    def _send(self, status: int, content_type: str, body: bytes, head_only: bool) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
        header = (
            f"HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            self.wfile.write(header if head_only else header + body)
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def serve(latest: LatestSample, port: int, addr: str = "0.0.0.0") -> socketserver.TCPServer:
    """Start the /metrics server in a daemon thread; `.shutdown()` stops it."""
    handler = type("Handler", (_Handler,), {"latest": latest})
    server = _Server((addr, port), handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
