"""The agent (``python -m telegen run``) exporting OTLP to the fake backend,
for tests that look at what a Collector would receive."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from telegen.testing.agent import start_telegen
from telegen.testing.backends import OtlpBackend


@dataclass
class RunningAgent:
    process: subprocess.Popen[bytes]
    backend: OtlpBackend
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""


@contextmanager
def agent_to_otlp_backend(tmp_path: Path, receivers: str, names: list[str]
                          ) -> Iterator[RunningAgent]:
    """Start the backend and an agent whose ``receivers:`` section is
    ``receivers`` (YAML, indented by two) and whose one pipeline takes
    ``names`` to the ``otlp`` exporter; stop both on exit (SIGTERM, then
    SIGKILL after 90 s: a loaded machine flushes slowly)."""
    backend = OtlpBackend().start()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""receivers:
{receivers}
exporters:
  otlp:
    endpoint: 127.0.0.1:{backend.port}
    tls: {{insecure: true}}
service:
  pipelines:
    profiles: {{receivers: [{", ".join(names)}], exporters: [otlp]}}
""")
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg)], log)
    try:
        yield RunningAgent(agent, backend, log)
    finally:
        agent.terminate()
        try:
            agent.wait(90)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        backend.stop()
