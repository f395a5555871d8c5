"""Process churn under the whole-host ebpf receiver (#21): what the agent keeps
per process goes with the process, and telemetry labelled by process name
does not grow with the number of names seen.

A real churn: ~450 short CPU-busy processes (40 ms each, so that samples and
CFI stack copies land in them), each started under its own name (a symlink
``churnNNNN``), two at a time, for 30 s, with 2 s windows."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import Profiles
from telegen.procinfo.procfs import alive
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry, sum_series

CHURN_S = 30.0
SERIES_LIMIT = 64


class Counting:
    mutates_data = False

    def __init__(self) -> None:
        self.samples = 0
        self.pids: set[int] = set()

    def consume(self, profiles: Profiles) -> None:
        self.samples += profiles.sample_count()
        for p in profiles:
            for s in p:
                for k, v in s.labels:
                    if k == "process.pid" and isinstance(v, int):
                        self.pids.add(v)


def _churn(brief: Path, tmp: Path, seconds: float) -> list[int]:
    pids: list[int] = []
    running: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        name = tmp / f"churn{i:04d}"
        name.symlink_to(brief)
        running.append(subprocess.Popen([str(name), "40"]))
        pids.append(running[-1].pid)
        i += 1
        while len(running) >= 2:
            running = [p for p in running if p.poll() is None]
            time.sleep(0.005)
    for p in running:
        p.wait()
    return pids


@pytest.mark.timeout(600)   # 30 s of churn; start-up and windows take minutes on a loaded host
def test_churn_keeps_no_state_of_exited_processes(bin_dir: Path, tmp_path: Path) -> None:
    registry = Registry(max_series_per_metric=SERIES_LIMIT)
    settings = CreateSettings(ComponentID("ebpf", "churn"), Kind.RECEIVER,
                              registry.for_component("receiver", "ebpf/churn"),
                              logging.getLogger("test.ebpf.churn"))
    sink = Counting()
    cfg = EbpfConfig(duration=2.0)
    cfg.validate()
    receiver = EbpfReceiver(settings, cfg, sink)

    def windows() -> float:
        return sum_series(registry.snapshot(), "ebpf_windows")

    receiver.start(None)  # type: ignore[arg-type]
    try:
        procs = receiver._procs
        time.sleep(4.0)                               # two windows of the host as it is
        series_before = registry.series_count()
        churned = _churn(bin_dir / "tg_brief", tmp_path, CHURN_S)
        # exits seen (or found), then two windows: three windows after the churn
        # (they run late on a loaded host)
        churn_end = windows()
        deadline = time.monotonic() + 90.0
        while windows() < churn_end + 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [pid for pid in churned if pid in procs]
        dead = [pid for pid in left if not alive(pid)]
        series_after = registry.series_count()
    finally:
        receiver.shutdown()
    assert windows() >= churn_end + 3, (churn_end, windows())
    sampled = sink.pids & set(churned)
    assert len(churned) >= 200, len(churned)
    assert len(sampled) >= len(churned) // 4, (len(sampled), len(churned))   # real work seen
    assert procs.released >= len(sampled) * 9 // 10, (procs.released, len(sampled))
    # what remains of them: pids reused by a live process only
    assert not dead, (len(dead), len(churned), churned.index(dead[0]))
    # every churned process had its own name: per-name series stop at the limit
    snap = registry.snapshot()
    per_name = [k for k in snap if k.startswith("ebpf_unwind_") and 'process="churn' in k]
    assert len(per_name) <= 3 * SERIES_LIMIT, len(per_name)
    assert series_after - series_before <= 4 * SERIES_LIMIT, (series_before, series_after)
    assert sum_series(snap, "ebpf_unwind_full") + sum_series(snap, "ebpf_unwind_truncated") \
        + sum_series(snap, "ebpf_unwind_errors") > 0
    assert os.getpid() not in churned
