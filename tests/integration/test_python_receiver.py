"""The ``python`` receiver end to end: the agent (``python -m telegen run``)
samples real CPython 3.11, 3.12 and 3.13 programs with real py-spy and writes
pprof files; each program measures its own CPU time per hot function."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from telegen.testing.agent import free_port, scrape, start_telegen, wait_until
from telegen.testing.pyprog import (
    pyenv_python,
    python_receiver_config,
    require_pythons,
    samples_by_pid,
)

TWOHOT = Path(__file__).resolve().parents[1] / "testdata" / "python" / "twohot.py"
VERSIONS = ("3.11", "3.12", "3.13")
RATE = 250


@pytest.fixture(autouse=True)
def _pythons() -> None:
    require_pythons(VERSIONS)       # fails, never skips, without py-spy or pyenv


def test_two_to_one_split_on_311_312_313_and_late_start(tmp_path: Path) -> None:
    out = tmp_path / "out"
    metrics = free_port()
    cfg = python_receiver_config(tmp_path / "agent.yaml", "twohot.py", RATE, out, metrics)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    reports = {v: tmp_path / f"report-{v}.json" for v in VERSIONS}

    def launch(version: str) -> None:
        exe = pyenv_python(version)
        assert exe is not None
        procs[version] = subprocess.Popen([exe, str(TWOHOT), str(reports[version]), "60"])

    launch("3.11")                                   # running before the agent
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg)], log)
    try:
        assert wait_until(lambda: "telegen_receiver_accepted_samples" in scrape(metrics)
                          or "sampling pid" in log.read_text(), 30), log.read_text()
        launch("3.12")                               # started after the agent
        launch("3.13")
        want = {procs[v].pid for v in VERSIONS}

        def enough() -> bool:
            got = samples_by_pid(out)
            # 4000 each: the sampling error of a share is 0.0075, a quarter of 3 points
            return all(sum(got.get(pid, Counter()).values()) >= 4000 for pid in want)

        assert wait_until(enough, 60, 0.5), log.read_text()
        measured = {v: json.loads(reports[v].read_text()) for v in VERSIONS}
        m = scrape(metrics)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        for p in procs.values():
            p.kill()
            p.wait()
    assert agent.returncode == 0, log.read_text()
    assert m["telegen_python_targets_started"] >= 3
    assert m.get("telegen_python_sampling_failures", 0) == 0, log.read_text()
    got = samples_by_pid(out)
    for v in VERSIONS:
        leaves = got[procs[v].pid]
        a = leaves["twohot.Worker.hot_a"]
        b = leaves["twohot.Worker.hot_b"]
        assert a + b >= 0.95 * sum(leaves.values()), leaves       # the hot functions only
        share = a / (a + b)
        truth = measured[v]["hot_a"] / (measured[v]["hot_a"] + measured[v]["hot_b"])
        print(f"CPython {v}: hot_a share {share:.3f} sampled ({a + b} samples) vs "
              f"{truth:.3f} measured in the program")
        assert abs(share - truth) <= 0.03, (v, share, truth)
    assert "sampling pid" in log.read_text()
