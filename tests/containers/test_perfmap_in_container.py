"""A JIT's perf map written inside a container names that process's JIT
frames only: two containers run the same JIT, each as pid 1 of its own pid
namespace (so both write /tmp/perf-1.map, each in its own /tmp) under a
different name, and a decoy /tmp/perf-<host pid>.map on the host names the
same address for one of them. Profiled by the ebpf receiver + symbolize."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from container_programs import JIT

from telegen.testing import containers
from telegen.testing.native import compile_c

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

NAMES = ("jit_in_container_one", "jit_in_container_two")
DECOY = "decoy_from_the_host_tmp"


@contextmanager
def _decoy(path: str, text: str) -> Iterator[None]:
    assert not os.path.exists(path)
    Path(path).write_text(text)
    try:
        yield
    finally:
        os.unlink(path)


def test_perf_map_inside_each_container_for_its_process_only(tmp_path: Path, base_image: str,
                                                             ebpf_pipeline) -> None:
    tree = tmp_path / "tree"
    tree.mkdir(mode=0o755)
    compile_c(JIT, tree / "tg_jit", flags=("-O1", "-g", "-fno-omit-frame-pointer"))
    (tree / "tg_jit.c").unlink()
    with ExitStack() as stack:
        jits = [stack.enter_context(containers.running(
            base_image, ["/opt/jit/tg_jit", name], user="1000:1000", ready="ready",
            copy_in=[(f"{tree}/.", "/opt/jit")])) for name in NAMES]
        pids = {c.pid: name for c, name in zip(jits, NAMES, strict=True)}
        for c in jits:
            assert containers.nspid(c.pid)[-1] == 1
            assert c.exec("cat", "/tmp/perf-1.map").stdout.decode().endswith(
                f" {pids[c.pid]}\n")
        # the same address named otherwise in the host's /tmp, for the first one
        address = jits[0].logs().split()[1]
        stack.enter_context(_decoy(f"/tmp/perf-{jits[0].pid}.map", f"{address} a {DECOY}\n"))
        assert not os.path.exists("/tmp/perf-1.map")

        pipeline = ebpf_pipeline(lambda: set(pids), sample_rate=99, duration=1.0,
                                 off_cpu=False, unwinding="frame_pointer",
                                 process_names=["^tg_jit$"])
        deadline = time.monotonic() + 60
        while not all(_leaves(pipeline, pid) for pid in pids):
            assert time.monotonic() < deadline, "no samples of the JIT processes"
            time.sleep(0.2)
        time.sleep(2)
        pipeline.receiver.shutdown()

    for pid, name in pids.items():
        leaves = _leaves(pipeline, pid)
        total = sum(leaves.values())
        assert leaves.get(name, 0) >= 0.9 * total, (name, leaves)
        assert DECOY not in leaves, leaves
    assert pipeline.metric("symbolize_frames", source="perfmap") > 0


def _leaves(pipeline, pid: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    out: dict[str, int] = {}
    for p in pipeline.sink.profiles("cpu"):
        for s in p:
            if dict(s.labels).get("process.pid") == pid and s.stack:
                leaf = s.stack[0]
                name = leaf.lines[0].function if leaf.lines else "?"
                out[name] = out.get(name, 0) + s.values[0]
    return out
