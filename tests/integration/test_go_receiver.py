"""The go receiver against a real Go service (tests/testdata/go/goservice,
built with the system Go) over real HTTP: attribution of every profile type,
mutex deltas against the program's own cumulative profile, a restart, discovery
without a configured port, and pprof_file output read by `go tool pprof`."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.formats.pprof import decode
from telegen.pdata import Profile
from telegen.receivers.go.config import GoReceiverConfig
from telegen.receivers.go.receiver import GoReceiver
from telegen.semconv import service_name
from telegen.telemetry import Registry
from telegen.testing import require
from telegen.testing.agent import free_port, telegen, wait_until
from telegen.testing.goprog import build_go_program, go_pprof
from telegen.testing.sink import Sink


@pytest.fixture(autouse=True)
def _go() -> None:
    require.tools("go", provider="golang-go, scripts/setup-host.sh")

SOURCE = Path(__file__).resolve().parents[1] / "testdata" / "go" / "goservice"
SPAN = "00f067aa0ba902b7"     # the span_id label goservice puts on burnCPU / parkHere
PARKED = 23                   # goroutines goservice parks in main.parkHere
HOLDERS = 4                   # goroutines contending for goservice's mutex


@pytest.fixture(scope="module")
def binary() -> Path:
    return build_go_program(SOURCE)


@contextmanager
def goservice(binary: Path, port: int = 0) -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([str(binary), str(port), str(PARKED), str(HOLDERS)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("port "), f"goservice did not start: {line!r}"
        yield proc, int(line.split()[1])
    finally:
        proc.kill()
        proc.wait(10)


def receiver(sink: Sink, reg: Registry, **cfg: Any) -> GoReceiver:
    config = GoReceiverConfig(**cfg)
    config.validate()
    settings = CreateSettings(ComponentID("go"), Kind.RECEIVER,
                              reg.for_component("receiver", "go"), logging.getLogger("go-test"))
    return GoReceiver(settings, config, sink)


def counter(reg: Registry, name: str, **labels: str) -> float:
    body = ",".join(f'{k}="{v}"' for k, v in sorted({"component": "go", "kind": "receiver",
                                                      **labels}.items()))
    return reg.snapshot().get(f"{name}{{{body}}}", 0)


def names(stack: Any) -> list[str]:
    """Function names leaf first, inlined callees included (as pprof shows them)."""
    return [name for f in stack for name in f.function_names()]


def value_in(profile: Profile, function: str, type_name: str) -> int:
    """Total of ``type_name`` over samples whose stack contains ``function``."""
    i = profile.value_index(type_name)
    return sum(s.values[i] for s in profile if function in names(s.stack))


def fetch(port: int, path: str) -> Profile:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/pprof/{path}", timeout=10) as r:
        return decode(r.read())


def test_every_profile_attributes_the_workload(binary: Path) -> None:
    sink, reg = Sink(), Registry()
    with goservice(binary) as (proc, port):
        rx = receiver(sink, reg, targets=[{"endpoint": f"127.0.0.1:{port}",
                                           "labels": {"service.name": "checkout", "env": "t"}}],
                      interval=2.0, cpu=True, memory=True, goroutine=True, mutex=True,
                      block=True)
        rx.start(None)  # type: ignore[arg-type]
        try:
            # the second tick brings the first deltas of mutex, block and alloc
            assert wait_until(lambda: {"cpu", "goroutine", "inuse", "alloc", "mutex", "block"}
                              <= {p.name for p in sink.profiles()}, 20), sink.profiles()
        finally:
            rx.shutdown()
    by = {p.name: p for p in sink.profiles()}
    for p in by.values():
        assert p.resource["service.name"] == "checkout" and p.resource["env"] == "t"
        assert p.resource["telegen.target"] == f"http://127.0.0.1:{port}/debug/pprof"
    # goroutine: exactly PARKED goroutines parked in main.parkHere, with their pprof label
    g = by["goroutine"]
    parked = [s for s in g if "main.parkHere" in names(s.stack)]
    assert sum(s.values[0] for s in parked) == PARKED
    assert all(("span_id", SPAN) in s.labels for s in parked)
    frame = next(f for f in parked[0].stack if f.name == "main.parkHere")
    assert frame.lines[-1].file.endswith("goservice/main.go") and frame.lines[-1].line > 0
    # mutex: the delay belongs to main.mutexHolder (Go records it at Unlock)
    m = by["mutex"]
    assert str(m.sample_types[1]) == "delay/nanoseconds"
    assert value_in(m, "main.mutexHolder", "delay") >= 0.99 * m.totals()[1] > 0
    # block: channel waits in main.chanWaiter, lock waits in main.mutexHolder
    b = by["block"]
    chan = [s for s in b if "main.chanWaiter" in names(s.stack)]
    assert chan and all(names(s.stack)[0] == "runtime.chanrecv1" for s in chan)
    assert sum(s.values[1] for s in chan) > 0.2e9          # ~1s of waiting per second
    assert value_in(b, "main.mutexHolder", "delay") > 0
    assert any(names(s.stack)[0] == "sync.(*Mutex).Lock" for s in b
               if "main.mutexHolder" in names(s.stack))
    # cpu: burnCPU is the top function (flat) and keeps its span_id label
    c = by["cpu"]
    flat: dict[str, int] = {}
    for s in c:
        flat[s.stack[0].name] = flat.get(s.stack[0].name, 0) + s.values[1]
    assert value_in(c, "main.burnCPU", "cpu") > 0.5 * c.totals()[1]
    assert max(flat, key=flat.__getitem__) in ("main.burnCPU", "runtime.asyncPreempt")
    assert all(("span_id", SPAN) in s.labels for s in c if "main.burnCPU" in names(s.stack))
    # memory: allocations at their site, in-use too
    a, u = by["alloc"], by["inuse"]
    top_alloc = max(a, key=lambda s: s.values[1])
    assert names(top_alloc.stack)[0] == "main.allocate"
    assert value_in(a, "main.allocate", "alloc_space") > 0.8 * a.totals()[1]
    assert value_in(u, "main.allocate", "inuse_space") > 0
    assert counter(reg, "go_scrape_errors", reason="down") == 0


def test_mutex_deltas_add_up_to_the_cumulative_profile(binary: Path) -> None:
    sink, reg = Sink(), Registry()
    windows = 5
    with goservice(binary) as (proc, port):
        rx = receiver(sink, reg, targets=[{"endpoint": f"127.0.0.1:{port}"}], interval=1.0,
                      cpu=False, mutex=True)
        started = time.monotonic()
        rx.start(None)  # type: ignore[arg-type]
        try:
            assert wait_until(lambda: len(sink.profiles("mutex")) >= windows, 20, 0.005)
            final = fetch(port, "mutex")      # the program's own cumulative profile
            elapsed = time.monotonic() - started
        finally:
            rx.shutdown()
    deltas = sink.profiles("mutex")[:windows]
    total = sum(value_in(d, "main.mutexHolder", "delay") for d in deltas)
    cumulative = value_in(final, "main.mutexHolder", "delay")
    window_worth = cumulative / elapsed * 1.0
    print(f"mutex: {windows} deltas sum {total / 1e9:.3f}s, cumulative {cumulative / 1e9:.3f}s, "
          f"one window ~{window_worth / 1e9:.3f}s")
    for d in deltas:
        assert all(v >= 0 for s in d for v in s.values)
        # never double counted: a window holds at most HOLDERS waiters for its duration
        assert d.totals()[1] <= HOLDERS * d.duration_ns
    assert 0 <= cumulative - total <= window_worth
    assert total > 0.5 * cumulative


def test_restarted_target_gives_no_negative_or_doubled_values(binary: Path,
                                                              caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    sink, reg = Sink(), Registry()
    port = free_port()
    rx = receiver(sink, reg, targets=[{"endpoint": f"127.0.0.1:{port}"}], interval=1.0,
                  cpu=False, mutex=True, block=True, memory=True)
    with caplog.at_level(logging.INFO, logger="go-test"):
        with goservice(binary, port):
            rx.start(None)  # type: ignore[arg-type]
            assert wait_until(lambda: len(sink.profiles("mutex")) >= 2, 15)
        before = len(sink.profiles("mutex"))
        time.sleep(2.2)                                     # at least one tick finds it down
        try:
            with goservice(binary, port) as (_, again):
                assert again == port
                restarted_at = time.time_ns()
                assert wait_until(lambda: len(sink.profiles("mutex")) >= before + 3, 15)
                final = {name: fetch(port, name) for name in ("mutex", "block")}
        finally:
            rx.shutdown()
    assert counter(reg, "go_scrape_errors", reason="down") >= 1
    assert counter(reg, "go_delta_resets") >= 1
    for p in sink.profiles():
        assert all(v >= 0 for s in p for v in s.values), p
    for name in ("mutex", "block"):
        series = sink.profiles(name)
        for d in series:     # physical bound: HOLDERS+1 waiting goroutines at most
            assert d.totals()[1] <= (HOLDERS + 1) * d.duration_ns, (name, d.totals())
        after = [d for d in series if d.start_ns + d.duration_ns > restarted_at]
        assert after, name
        # everything emitted for the new process is at most what it counted itself
        assert sum(d.totals()[1] for d in after) <= final[name].totals()[1]
    warnings = [r for r in caplog.records if "failed (down" in r.getMessage()]
    recovered = [r for r in caplog.records if "works again" in r.getMessage()]
    assert len(warnings) == 1 and len(recovered) == 1, caplog.text   # once per state change


def _fake_pprof_server(tmp_path: Path) -> tuple[subprocess.Popen[str], int, Path]:
    """A non-Go process (Python) on loopback that answers /debug/pprof/ like Go."""
    hits = tmp_path / "hits"
    code = f"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open({str(hits)!r}, "a").write(self.path + "\\n")
        self.send_response(200); self.end_headers(); self.wfile.write(b"goroutine heap")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print("port", s.server_address[1], flush=True)
s.serve_forever()
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline().split()[1]), hits


def test_discovery_finds_go_programs_without_a_configured_port(binary: Path,
                                                               tmp_path: Path) -> None:
    sink, reg = Sink(), Registry()
    fake, fake_port, hits = _fake_pprof_server(tmp_path)
    rx = receiver(sink, reg, discovery=True, interval=1.0, cpu=False, goroutine=True)

    def pids() -> set[object]:
        return {p.resource.get("process.pid") for p in sink.profiles("goroutine")}

    try:
        with goservice(binary) as (first, port):
            rx.start(None)  # type: ignore[arg-type]
            assert wait_until(lambda: first.pid in pids(), 15), [t.url for t in rx.targets]
            g = next(p for p in sink.profiles("goroutine")
                     if p.resource.get("process.pid") == first.pid)
            assert g.resource["telegen.target"] == f"http://127.0.0.1:{port}/debug/pprof"
            # named by its executable where it is sent (no OTEL_SERVICE_NAME)
            assert service_name(g.resource) == binary.name
            assert g.resource["process.executable.name"] == binary.name
            assert sum(s.values[0] for s in g if "main.parkHere" in names(s.stack)) == PARKED
            with goservice(binary) as (second, _):          # a new one is picked up
                assert wait_until(lambda: second.pid in pids(), 15)
            # the second one exited: dropped at the next rescan
            assert wait_until(lambda: second.pid not in {t.pid for t in rx.targets}, 5)
            assert first.pid in {t.pid for t in rx.targets}
    finally:
        rx.shutdown()
        fake.kill()
        fake.wait(10)
    # the Python server answers like pprof but is not Go: never touched
    assert not hits.exists(), hits.read_text()
    assert fake_port not in {int(t.url.split(":")[2].split("/")[0]) for t in rx.targets}


def test_pprof_file_output_is_read_by_go_tool_pprof(binary: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    with goservice(binary) as (_, port):
        cfg = tmp_path / "go.yaml"
        cfg.write_text(f"""
receivers:
  go:
    targets:
      - endpoint: "127.0.0.1:{port}"
        labels: {{service.name: goservice}}
    interval: 2s
    memory: true
    goroutine: true
    mutex: true
    block: true
exporters:
  pprof_file:
    directory: {out}
service:
  pipelines:
    profiles:
      receivers: [go]
      exporters: [pprof_file]
""")
        proc = telegen("run", "-c", str(cfg), "--duration", "5", timeout=60)
    assert proc.returncode == 0, proc.stderr
    files = {re.sub(r"-.*", "", f.name): f for f in sorted(out.glob("*.pb.gz"))}
    assert {"cpu", "goroutine", "inuse", "alloc", "mutex", "block"} <= set(files), files
    top = go_pprof("-top", str(files["goroutine"]))
    assert re.search(rf"^\s*0\s+0%\s+\S+\s+{PARKED}\s+\S+\s+main\.parkHere$", top, re.M), top
    assert 'resource:service.name="goservice"' in top, top
    tags = go_pprof("-tags", str(files["cpu"]))
    assert "span_id" in tags and SPAN in tags, tags
    cpu_top = go_pprof("-top", "-nodecount=3", "-focus=main\\.", str(files["cpu"]))
    assert "main.burnCPU" in cpu_top, cpu_top
    for name, function in (("mutex", "main.mutexHolder"), ("block", "main.chanWaiter"),
                           ("alloc", "main.allocate"), ("inuse", "main.allocate")):
        text = go_pprof("-top", "-cum", str(files[name]))
        assert function in text, (name, text)
    listing = go_pprof("-top", "-lines", str(files["goroutine"]))
    assert re.search(r"main\.parkHere .*goservice/main\.go:\d+", listing), listing
    assert os.path.getsize(files["cpu"]) > 0
