"""The agent's own children (index builders, c++filt, the BPF compiler) are not
profiled: a spawner says so (procinfo.agent.child_started) and the ebpf
receiver keeps the pid in its BPF ``excluded`` map until the child ends."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from telegen.procinfo import agent
from telegen.testing import native

WORKLOADS = Path(__file__).resolve().parents[2] / "testdata" / "workloads"


def _pids(r: Any) -> dict[int, int]:
    seen: dict[int, int] = {}
    for p in r.sink.profiles("cpu"):
        for s in p:
            pid = dict(s.labels).get("process.pid")
            if isinstance(pid, int):
                seen[pid] = seen.get(pid, 0) + s.values[0]
    return seen


def test_a_child_the_agent_runs_for_itself_is_not_profiled(run_receiver: Any,
                                                          tmp_path: Path) -> None:
    prog = native.compile_c((WORKLOADS / "tg_nofp.c").read_text(), tmp_path / "tg_own_child",
                            flags=("-O2", "-g"))
    r = run_receiver(duration=1.0, process_names=["^tg_own_child$"], off_cpu=False)
    ours = subprocess.Popen([str(prog), "3"], stdout=subprocess.DEVNULL)
    agent.child_started(ours.pid)
    theirs = subprocess.Popen([str(prog), "3"], stdout=subprocess.DEVNULL)
    excluded = r.receiver._bpf.table("excluded")
    try:
        assert excluded[excluded.Key(ours.pid)].value == 1
        assert ours.wait(timeout=30) == 0 and theirs.wait(timeout=30) == 0
    finally:
        agent.child_ended(ours.pid)
    time.sleep(2.5)                                         # the last windows
    with_samples = _pids(r)
    print(f"CPU samples: the agent's child {with_samples.get(ours.pid, 0)}, "
          f"the other program {with_samples.get(theirs.pid, 0)}")
    assert with_samples.get(theirs.pid, 0) >= 50            # the same program is sampled
    assert with_samples.get(ours.pid, 0) == 0
    assert ours.pid not in agent.own_children()
    try:
        excluded[excluded.Key(ours.pid)]
        raise AssertionError("the ended child's pid is still excluded")
    except KeyError:
        pass
