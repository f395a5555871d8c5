"""A native binary that exists only inside a container, profiled by the
whole-host ebpf receiver and symbolized from the container's filesystem
(its split debug file inside the container, found by build-id); the samples
carry the container id podman reports and the pid inside the container."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from container_programs import spinner_source

from telegen.symbols.elf import ElfFile, read_build_id
from telegen.testing import containers
from telegen.testing.native import compile_c, nm, split_debug

pytestmark = [pytest.mark.bpf, pytest.mark.slow]

INSIDE = "/opt/inside-only/tg_inside"
SECONDS = 600.0     # ended with the container


@pytest.fixture
def container_tree(tmp_path: Path) -> tuple[Path, Path, str]:
    """(a root tree to copy into a container, the debug file, build-id): the
    stripped binary at INSIDE, its split debug file under the container's
    /usr/lib/debug/.build-id. Built on the host, deleted from it once copied."""
    build = tmp_path / "build"
    build.mkdir()
    binary = compile_c(spinner_source("inside_only"), build / "tg_inside",
                       flags=("-O1", "-g", "-fno-omit-frame-pointer", "-Wl,--build-id"))
    debug = split_debug(binary, build / "tg_inside.debug")
    build_id = read_build_id(str(binary))
    tree = tmp_path / "tree"
    placed = {INSIDE: binary, debug_path(build_id): debug}
    for inside, host in placed.items():
        dest = tree / inside.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        host.rename(dest)
    for d, _dirs, files in os.walk(tree):      # tmp dirs are 0700: not for uid 1000
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o755)
    return tree, tree / debug_path(build_id).lstrip("/"), build_id


def debug_path(build_id: str) -> str:
    return f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"


def test_container_only_binary_symbolized_and_labelled(base_image, container_tree,
                                                       ebpf_pipeline) -> None:
    """Whole host (frame-pointer stacks: the CFI tables of every binary on a busy
    host take minutes to build) for the labels and symbols; then the same
    process targeted with CFI-only unwinding, whose tables come from the
    container-only binary."""
    tree, debug, build_id = container_tree
    binary = tree / INSIDE.lstrip("/")
    assert ElfFile(str(binary)).symbols(".symtab") is None          # really stripped
    assert "inside_only_leaf" in nm(debug)
    assert not os.path.exists(INSIDE) and not os.path.exists(debug_path(build_id))
    # the workload is not the container's first process, and runs as a plain user
    command = ["sh", "-c", f"{INSIDE} {SECONDS}; echo done"]
    workload: set[int] = set()
    with containers.running(base_image, command, user="1000:1000", ready="ready",
                            copy_in=[(f"{tree}/.", "/")]) as c:
        shutil.rmtree(tree)                   # from now on only the container has them
        podman_id = containers.inspect(c.id, "{{.Id}}")
        [pid] = [p for p in c.host_pids() if _comm(p) == "tg_inside"]
        workload.add(pid)
        inner_pid = containers.nspid(pid)[-1]
        assert inner_pid != pid
        whole_host = _profile(ebpf_pipeline, workload, pid, unwinding="frame_pointer")
        cfi_only = _profile(ebpf_pipeline, workload, pid, unwinding="dwarf",
                            process_names=["^tg_inside$"])
        assert c.host_pids(), "the workload ended before its windows were symbolized"

    for pipeline in (whole_host, cfi_only):
        samples = _samples(pipeline, pid)
        labels = dict(samples[0].labels)
        assert labels["container.id"] == podman_id
        assert labels["process.vpid"] == inner_pid
        assert labels["process.executable.path"] == INSIDE
        named = [s for s in samples if _functions(s)[:3] ==
                 ["inside_only_leaf", "inside_only_outer", "main"]]
        share = sum(s.values[0] for s in named) / sum(s.values[0] for s in samples)
        assert share >= 0.9, (f"only {share:.0%} of the samples are named from the container: "
                              f"{[_functions(s) for s in samples[:3]]} {samples[0].stack[:3]}")
        leaf = named[0].stack[0]
        assert leaf.mapping is not None and leaf.mapping.build_id == build_id
        assert leaf.mapping.has_line_numbers
        assert leaf.lines[0].file.endswith("tg_inside.c") and leaf.lines[0].line > 0
        assert pipeline.metric("symbolize_frames", source="debuginfo_file") > 0


def _profile(ebpf_pipeline, workload: set[int], pid: int, **ebpf: object):  # type: ignore[no-untyped-def]
    """A receiver session until two windows hold the workload's samples."""
    pipeline = ebpf_pipeline(lambda: workload, sample_rate=99, duration=1.0, off_cpu=False,
                             **ebpf)
    deadline = time.monotonic() + 90
    while len([p for p in pipeline.sink.profiles("cpu")
               if any(dict(s.labels).get("process.pid") == pid for s in p)]) < 2:
        assert time.monotonic() < deadline, f"no samples of pid {pid} with {ebpf}"
        time.sleep(0.2)
    pipeline.receiver.shutdown()
    return pipeline


def _samples(pipeline, pid: int) -> list:  # type: ignore[no-untyped-def,type-arg]
    samples = [s for p in pipeline.sink.profiles("cpu") for s in p
               if dict(s.labels).get("process.pid") == pid]
    assert len(samples) >= 1
    return samples


def _functions(sample) -> list[str]:  # type: ignore[no-untyped-def]
    """Function names leaf first, inlined frames included."""
    return [ln.function for f in sample.stack for ln in f.lines]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
