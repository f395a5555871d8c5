"""End to end through the CLI: real Go profiles replayed through
pprof → filter(runtime.*) → batch → pprof_file, judged by `go tool pprof`."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

from telegen.formats.pprof import decode
from telegen.testing.agent import free_port, scrape, start_telegen, telegen, wait_until
from telegen.testing.goprog import go_pprof


def _total_ns(path: Path) -> int:
    """The profile's total as `go tool pprof` reports it."""
    m = re.search(r"Total samples = (\d+)ns", go_pprof("-top", "-unit=ns", str(path)))
    assert m, f"no total in go tool pprof output for {path}"
    return int(m.group(1))


def test_replay_go_profiles_hides_runtime_and_keeps_total(go_profiles: Path,
                                                          tmp_path: Path) -> None:
    inputs = sorted(go_profiles.glob("cpu-*.pb.gz"))
    assert len(inputs) == 3
    out = tmp_path / "out"
    cfg = tmp_path / "replay.yaml"
    cfg.write_text(f"""
receivers:
  pprof:
    paths: ["{go_profiles}/cpu-*.pb.gz"]
processors:
  filter:
    exclude_patterns: ["runtime.*"]
  batch:
    timeout: 1h
exporters:
  pprof_file:
    directory: {out}
service:
  pipelines:
    profiles:
      receivers: [pprof]
      processors: [filter, batch]
      exporters: [pprof_file]
""")
    proc = telegen("run", "-c", str(cfg), "--duration", "4")
    assert proc.returncode == 0, proc.stderr
    written = sorted(out.glob("*.pb.gz"))
    assert written, proc.stderr
    # the Go input really had runtime frames, so hiding them is tested
    assert "runtime." in go_pprof("-traces", str(inputs[0]))
    for f in written:
        assert "runtime." not in go_pprof("-traces", str(f))
        assert "runtime." not in go_pprof("-top", str(f))
    assert sum(_total_ns(f) for f in written) == sum(_total_ns(f) for f in inputs)


def test_sigterm_flushes_everything_received(go_profiles: Path, tmp_path: Path) -> None:
    src = sorted(go_profiles.glob("*.pb.gz"))
    incoming, out = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()
    port = free_port()
    cfg = tmp_path / "watch.yaml"
    cfg.write_text(f"""
receivers:
  pprof:
    paths: ["{incoming}/*.pb.gz"]
    watch: true
    poll_interval: 100ms
processors:
  batch:
    timeout: 1h          # nothing leaves before the signal
exporters:
  pprof_file:
    directory: {out}
service:
  telemetry:
    metrics:
      level: basic
      address: 127.0.0.1:{port}
  pipelines:
    profiles:
      receivers: [pprof]
      processors: [batch]
      exporters: [pprof_file]
""")
    agent = start_telegen(["run", "-c", str(cfg)], tmp_path / "agent.log")
    try:
        expected: dict[str, list[int]] = {}
        distinct = 0
        for f in src:
            p = decode(f.read_bytes())
            distinct += len(p)
            tot = expected.setdefault(p.name, [0] * len(p.totals()))
            expected[p.name] = [a + b for a, b in zip(tot, p.totals(), strict=True)]
            shutil.copy(f, incoming / f.name)
        assert wait_until(lambda: scrape(port).get("telegen_receiver_sent_samples", 0)
                          >= distinct, 60), (tmp_path / "agent.log").read_text()
        assert not list(out.glob("*.pb.gz"))     # still held by batch
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, (tmp_path / "agent.log").read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
    got: dict[str, list[int]] = {}
    for f in out.glob("*.pb.gz"):
        p = decode(f.read_bytes())
        tot = got.setdefault(p.name, [0] * len(p.totals()))
        got[p.name] = [a + b for a, b in zip(tot, p.totals(), strict=True)]
    assert got == expected


def test_metrics_endpoint_and_shutdown_summary(go_profiles: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"""
receivers:
  pprof: {{paths: ["{go_profiles}/cpu-*.pb.gz"]}}
exporters:
  console: {{top: 3}}
service:
  telemetry: {{metrics: {{level: basic, address: "127.0.0.1:{port}"}}}}
  pipelines:
    profiles: {{receivers: [pprof], exporters: [console]}}
""")
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg), "--duration", "20"], log)
    try:
        assert wait_until(lambda: scrape(port).get("telegen_incoming_samples", 0) > 0, 30), \
            log.read_text()
        metrics = scrape(port)
        assert metrics["telegen_receiver_sent_samples"] == metrics["telegen_incoming_samples"]
        agent.send_signal(signal.SIGINT)
        assert agent.wait(60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    text = log.read_text()
    assert "Total CPU time:" in text and "Flat%" in text
    assert "telemetry receiver_sent_samples" in text


def test_bad_config_exits_2_naming_the_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("receivers:\n  pprof:\n    paths: [a]\n    sampel: 1\n")
    for cmd in (["validate", "-c", str(cfg)], ["run", "-c", str(cfg)]):
        proc = telegen(*cmd)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert str(cfg) in lines[0] and "receivers::pprof" in lines[0]


def test_start_failure_is_reported_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "port"
    port = free_port()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"""
receivers: {{pprof: {{paths: ["{blocker}/*"]}}}}
exporters: {{console: {{}}}}
service:
  telemetry: {{metrics: {{level: basic, address: "127.0.0.1:{port}"}}}}
  pipelines: {{profiles: {{receivers: [pprof], exporters: [console]}}}}
""")
        proc = telegen("run", "-c", str(cfg), "--duration", "1")
    assert proc.returncode == 1
    assert "service::telemetry::metrics" in proc.stderr and "Traceback" not in proc.stderr


def test_version_and_components() -> None:
    assert telegen("--version", check=True).stdout.startswith("telegen ")
    out = telegen("components", check=True).stdout
    for name in ("pprof", "filter", "batch", "pprof_file", "console"):
        assert re.search(rf"^\s+{name}\s", out, re.M), out


def test_go_is_the_judge_available() -> None:
    assert subprocess.run(["go", "version"], capture_output=True).returncode == 0
