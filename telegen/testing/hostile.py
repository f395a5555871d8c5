"""Attacks on the agent's servers, performed for real: the agent runs as a
user runs it (``python -m telegen run``) with every HTTP server on (OTLP
gRPC + HTTP, ``ui``, ``spanstore`` view, metrics); helpers send raw requests
with chosen ``Host:`` headers, gzip bombs built without holding them
inflated, and read the agent's memory from ``/proc/PID/status``."""

from __future__ import annotations

import http.client
import re
import socket
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from telegen.testing.agent import free_port, start_telegen, wait_until

SERVERS = ("otlp_http", "ui_http", "spanstore_http", "metrics_http")
_SERIES = re.compile(r'^telegen_refused_inputs\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


@dataclass
class AgentServers:
    proc: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int] = field(default_factory=dict)   # otlp_grpc + SERVERS

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def refused(self) -> dict[tuple[str, str], float]:
        """``refused_inputs`` from the agent's metrics: (source, reason) -> count."""
        status, body = request(self.ports["metrics_http"], "GET", "/metrics")
        assert status == 200, body[:200]
        out: dict[tuple[str, str], float] = {}
        for line in body.decode().splitlines():
            m = _SERIES.match(line)
            if m:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
                key = (labels["source"], labels["reason"])
                out[key] = out.get(key, 0.0) + float(m.group("value"))
        return out

    def memory_kib(self) -> dict[str, int]:
        return memory_kib(self.proc.pid)


def start_agent_servers(workdir: Path, *, grpc_max_mib: int = 4,
                        grpc_streams: int = 16) -> AgentServers:
    """The agent with every HTTP server on loopback, ready to serve."""
    ports = {name: free_port() for name in ("otlp_grpc", *SERVERS)}
    config = workdir / "servers.yaml"
    config.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{ports['otlp_grpc']}", max_recv_msg_size_mib: {grpc_max_mib},
             max_concurrent_streams: {grpc_streams}}}
      http: {{endpoint: "127.0.0.1:{ports['otlp_http']}"}}
    spanstore: spanstore
exporters:
  ui: {{extension: ui}}
extensions:
  ui: {{endpoint: "127.0.0.1:{ports['ui_http']}"}}
  spanstore: {{endpoint: "127.0.0.1:{ports['spanstore_http']}"}}
service:
  extensions: [ui, spanstore]
  telemetry:
    metrics: {{level: basic, address: "127.0.0.1:{ports['metrics_http']}"}}
  pipelines:
    profiles:
      receivers: [otlp]
      exporters: [ui]
""")
    log = workdir / "agent.log"
    agent = AgentServers(start_telegen(["run", "-c", str(config)], log), log, ports)
    if not wait_until(lambda: "started 4 components" in agent.log_text()
                      or agent.proc.poll() is not None, 60):
        agent.stop()
        raise AssertionError(f"the agent did not start:\n{agent.log_text()}")
    if agent.proc.poll() is not None:
        raise AssertionError(f"the agent exited:\n{agent.log_text()}")
    return agent


def request(port: int, method: str, path: str, *, host: str | None = None,
            body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, bytes]:
    """One request over a fresh connection with ``host`` as ``Host:`` (default
    ``127.0.0.1:port``): (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body,
                     headers={"Host": host or f"127.0.0.1:{port}", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``data`` as it is (a hand-made head, maybe without a body) and read
    one response: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.read()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def gzip_zeros(size: int, *, layers: int = 1) -> bytes:
    """``size`` zero bytes (a multiple of 1 MiB) as one gzip stream, gzipped
    again ``layers - 1`` times. Deflate is reset after every MiB, so every
    MiB compresses to the same block: the stream is built by repeating it
    (1 GiB -> ~1 MB in a second, never held inflated)."""
    mib = 1 << 20
    assert size % mib == 0 and size >= 2 * mib
    chunk = bytes(mib)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)     # gzip header + 1 MiB
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    assert block == comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // mib):
        crc = zlib.crc32(chunk, crc)
    final = b"\x03\x00" + struct.pack("<II", crc, size & 0xFFFFFFFF)   # empty last block
    data = first + block * (size // mib - 1) + final
    for _ in range(layers - 1):
        data = zlib.compress(data, 9, wbits=31)
    return data
