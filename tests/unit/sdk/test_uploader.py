"""The SDK's uploads against a real OTLP gRPC backend, and its behaviour with
the agent down."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import telegen.sdk
from telegen.formats.otlp import decode_request
from telegen.sdk.sampler import Sampler
from telegen.sdk.spans import SpanTracker
from telegen.sdk.stats import Stats
from telegen.sdk.uploader import Uploader
from telegen.testing import pyroscope_otlp, require
from telegen.testing.agent import free_port
from telegen.testing.backends import OtlpBackend

ROOT = Path(__file__).resolve().parents[3]


def known_wait(evt: threading.Event) -> None:
    evt.wait(30)


def make(port: int, *, max_pending: int = 2) -> tuple[Sampler, Uploader, Stats]:
    stats = Stats()
    tracker = SpanTracker()
    sampler = Sampler(rate=100, asyncio=False, tracker=tracker, stats=stats)
    up = Uploader(sampler, stats, endpoint=f"127.0.0.1:{port}", service_name="svc",
                  upload_interval=60, timeout=1.0, max_pending=max_pending,
                  resource={"deployment.environment": "test"})
    return sampler, up, stats


def test_upload_is_an_otlp_wall_profile_with_span_links() -> None:
    backend = OtlpBackend().start()
    stop = threading.Event()
    t = threading.Thread(target=known_wait, args=(stop,), name="known-waiter")
    t.start()
    try:
        sampler, up, stats = make(backend.port)
        ctx = SimpleNamespace(trace_id=0x1234, span_id=0xABCD)
        sampler.tracker.started(SimpleNamespace(get_span_context=lambda: ctx))  # in a span
        for _ in range(3):
            sampler.sample_once()
        up.flush()
    finally:
        stop.set()
        t.join()
        backend.stop()
    assert stats.exported_profiles == 1 and stats.export_failures == 0
    (req,) = backend.requests()
    (prof,) = decode_request(req)
    assert prof.name == "wall" and prof.period == 10_000_000
    assert prof.resource["service.name"] == "svc"
    assert prof.resource["deployment.environment"] == "test"
    assert prof.resource["process.pid"] == os.getpid()
    waiter = [s for s in prof if dict(s.labels).get("thread.name") == "known-waiter"]
    assert len(waiter) == 1 and waiter[0].values == [3, 30_000_000]
    assert [f.name for f in waiter[0].stack][2] == f"{__name__}.known_wait"
    assert waiter[0].stack[2].lines[0].file == __file__
    mine = [s for s in prof if s.link is not None]
    assert {(s.link.trace_id, s.link.span_id) for s in mine if s.link} == \
        {(format(0x1234, "032x"), format(0xABCD, "016x"))}
    assert dict(mine[0].labels)["thread.name"] == "MainThread"
    # one series in Pyroscope (its OTLP converter, telegen.testing.pyroscope_otlp):
    # samples/count with the wall period, not a second wall/nanoseconds profile
    assert [s.profile_type for s in pyroscope_otlp.convert(req)] == \
        ["wall:samples:count:wall:nanoseconds"]


def test_agent_down_bounded_queue_counted_drops_then_recovers() -> None:
    port = free_port()
    sampler, up, stats = make(port, max_pending=2)
    for _ in range(4):                      # 4 uploads while nothing listens
        sampler.sample_once()
        up.flush()
    assert stats.export_failures >= 4 and stats.exported_profiles == 0
    assert len(up.pending) == 2 and stats.dropped_uploads == 2
    assert stats.dropped_samples == stats.samples - sum(n for _, n in up.pending)
    backend = OtlpBackend(port).start()
    try:
        deadline = time.monotonic() + 15    # gRPC reconnects within its backoff (<= 5 s)
        while up.pending and time.monotonic() < deadline:
            time.sleep(0.2)
            up.flush()                      # what the next upload_interval does
    finally:
        backend.stop()
    assert stats.exported_profiles == 2 and not up.pending     # the 2 kept, oldest first
    assert len(backend.requests()) == 2 and stats.dropped_uploads == 2


def test_start_never_raises_and_reports_why() -> None:
    assert telegen.sdk.start(sample_rate=0) is None
    assert telegen.sdk.start(endpoint="nowhere") is None
    assert telegen.sdk.start(upload_interval=-1) is None
    assert telegen.sdk.stats() == {}
    port = free_port()                      # nothing listens: the agent is down
    prof = telegen.sdk.start(endpoint=f"127.0.0.1:{port}", upload_interval=0.1,
                             service_name="t")
    try:
        assert prof is not None
        assert telegen.sdk.start() is prof                # once per process
        names = {t.name for t in threading.enumerate()}
        assert {"telegen-sdk-sampler", "telegen-sdk-uploader"} <= names
        threading.Event().wait(0.5)
        st = telegen.sdk.stats()
        assert st["samples"] > 0 and st["export_failures"] > 0
    finally:
        telegen.sdk.stop()
    assert not {"telegen-sdk-sampler", "telegen-sdk-uploader"} & \
        {t.name for t in threading.enumerate()}
    telegen.sdk.stop()                                    # idempotent


def test_import_is_light() -> None:
    code = ("import sys, telegen.sdk; print(sorted(m for m in sys.modules if m.startswith("
            "('grpc', 'google', 'opentelemetry', 'telegen.pdata', 'telegen.formats', "
            "'telegen.receivers', 'yaml', 'jsonschema'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


PY38 = sorted(glob.glob("/root/.pyenv/versions/3.8*/bin/python3.8"))


def test_sampling_core_runs_on_python_38() -> None:
    """The app's interpreter may be old: sampling, task chains and the API run on
    3.8; the upload needs the agent's encoder (3.11+), so it fails counted."""
    require.prerequisite(bool(PY38), "pyenv's CPython 3.8")
    code = f"""
import asyncio, json, telegen.sdk
async def parked():
    await asyncio.sleep(5)
async def main():
    t = asyncio.ensure_future(parked())
    await asyncio.sleep(0.6)
    t.cancel()
p = telegen.sdk.start(endpoint="127.0.0.1:{free_port()}", asyncio=True, upload_interval=0.2)
asyncio.run(main())
p.sampler.fold()
chains = [[p.sampler.names[c][0] for c, _ in k[3]] for k in p.sampler._buffer.counts if k[2]]
telegen.sdk.stop()
print(json.dumps({{"stats": p.stats.as_dict(), "chains": chains}}))
"""
    proc = subprocess.run([PY38[0], "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stats"]["samples"] > 20
    assert ["asyncio.tasks.sleep", "string.parked"] in out["chains"]     # ``-c`` code
    assert out["stats"]["errors"] >= 1 and out["stats"]["dropped_samples"] > 0
