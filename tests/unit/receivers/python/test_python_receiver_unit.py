"""The receiver's scheduling and failure accounting against a scripted engine
(real processes for liveness; the engine is the only stand-in)."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from telegen.component import Kind
from telegen.receivers.python.config import PythonReceiverConfig
from telegen.receivers.python.engine import (
    EngineError,
    EngineOptions,
    RawFrame,
    ThreadStack,
)
from telegen.receivers.python.receiver import PythonReceiver
from telegen.telemetry import Registry
from telegen.testing.settings import counter, create_settings
from telegen.testing.sink import Sink

STACK = (RawFrame("Worker.run", "/srv/app/worker.py", 12),
         RawFrame("<module>", "/srv/app/worker.py", 30))


@dataclass
class ScriptedRecording:
    pid: int
    outcome: list[ThreadStack] | EngineError
    ends_at: float
    stopped: bool = False

    def done(self) -> bool:
        return self.stopped or time.monotonic() >= self.ends_at

    def stop(self) -> None:
        self.stopped = True

    def result(self, timeout_s: float = 10.0) -> list[ThreadStack]:
        if isinstance(self.outcome, EngineError):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.stopped = True


@dataclass
class ScriptedEngine:
    """Each record() takes the next outcome (the last one repeats)."""

    outcomes: list[list[ThreadStack] | EngineError]
    window_s: float = 0.2
    calls: list[tuple[int, EngineOptions]] = field(default_factory=list)
    name: str = "scripted"

    def record(self, pid: int, options: EngineOptions) -> ScriptedRecording:
        self.calls.append((pid, options))
        out = self.outcomes[min(len(self.calls) - 1, len(self.outcomes) - 1)]
        return ScriptedRecording(pid, out, time.monotonic() + self.window_s)


@pytest.fixture
def target() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


def make(engine: ScriptedEngine, pid: int, **kw: object
         ) -> tuple[PythonReceiver, Sink, Registry]:
    reg = Registry()
    sink = Sink()
    cfg = PythonReceiverConfig(pids=[pid], scan_interval=0.1, **kw)  # type: ignore[arg-type]
    cfg.validate()
    r = PythonReceiver(create_settings(Kind.RECEIVER, "python", reg), cfg, sink, engine=engine)
    return r, sink, reg


def test_windows_become_profiles_with_options_passed(target: subprocess.Popen[bytes]) -> None:
    engine = ScriptedEngine([[ThreadStack(target.pid, "MainThread", STACK, 7)]])
    r, sink, reg = make(engine, target.pid, gil_only=True, native=True, sample_rate=50)
    r.start(None)   # type: ignore[arg-type]
    try:
        assert sink.wait_for(3, 10)
    finally:
        r.shutdown()
    opts = engine.calls[0][1]
    assert (opts.rate, opts.seconds, opts.gil_only, opts.native, opts.include_idle) == (
        50, 10, True, True, False)
    prof = sink.profiles("cpu")[0]
    assert prof.totals() == [7, 7 * 20_000_000]
    s = prof.samples[0]
    assert [f.name for f in s.stack] == ["worker.Worker.run", "worker.<module>"]
    assert dict(s.labels) == {"thread.id": target.pid, "thread.name": "MainThread"}
    assert prof.resource["process.pid"] == target.pid
    assert prof.resource["process.executable.name"] == "sleep"     # the target's executable
    assert "process.command_line" not in prof.resource      # off: command lines hold secrets
    assert counter(reg, "receiver_accepted_samples") >= 3
    assert counter(reg, "python_targets_started") == 1


def test_failures_counted_and_logged_once_per_state_change(
        target: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture) -> None:
    bad = EngineError("permission denied", "ptrace: Operation not permitted")
    engine = ScriptedEngine([bad], window_s=0.0)
    r, sink, reg = make(engine, target.pid)
    with caplog.at_level(logging.WARNING):
        r.start(None)   # type: ignore[arg-type]
        time.sleep(0.6)
        r.shutdown()
    assert counter(reg, "python_sampling_failures") == 1     # retried only after 10 s
    warnings = [rec for rec in caplog.records if "permission denied" in rec.getMessage()]
    assert len(warnings) == 1
    assert sink.batches == []


def test_exited_target_is_dropped_and_counted() -> None:
    proc = subprocess.Popen(["sleep", "0.3"])
    engine = ScriptedEngine([[ThreadStack(proc.pid, "", STACK, 1)]], window_s=0.1)
    r, sink, reg = make(engine, proc.pid)
    r.start(None)   # type: ignore[arg-type]
    try:
        proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and counter(reg, "python_targets_exited") < 1:
            time.sleep(0.05)
    finally:
        r.shutdown()
    assert counter(reg, "python_targets_exited") == 1
    assert r.sampled_pids == []
    assert counter(reg, "python_sampling_failures") == 0
