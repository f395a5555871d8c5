"""A cheaper first start (#21): the compiler child compiles the cpu sampler
alone first when memory or mutex profiling is on, and samples while the
rest compiles; the rest's programs use the maps the sampler's compile made.
Neither that split, nor telegen.h declaring what it used of two kernel
headers, nor compiling without debug information changes a single
instruction: the object is compared with one compile as before (kernel
headers, BCC's -g)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from telegen.receivers.ebpf import bpf_child, bpf_loader
from telegen.receivers.ebpf.bpf_loader import BpfOptions, LoadedBpf

pytestmark = pytest.mark.timeout(900)     # BCC's compile takes minutes on a loaded machine
ALL_TYPES = BpfOptions(user_stacks=True, memory=True, memory_inuse=True, mutex=True)
KERNEL_HEADERS = "#include <uapi/linux/bpf_perf_event.h>\n#include <linux/sched.h>\n"

# run in a child: bcc is never imported into the test process (as in the agent)
COMPILE = r"""
import json, os, sys
from pathlib import Path
from typing import Any
from telegen import bpfc
from telegen.bpf import compiled
from telegen.receivers.ebpf import bpf_child, bpf_loader
request = json.loads(sys.argv[1])
bpf_loader.BPF_DIR = Path(request["bpf_dir"])
if request["debug_info"]:
    bpfc.NO_DEBUG_INFO = []
options = bpf_loader.BpfOptions(**request["options"])
if request["split"]:
    obj = None
    for files in options.phases():
        part, _ = bpfc.compile_object(options, files)
        obj = part if obj is None else compiled.merge(obj, part)
else:
    obj, _ = bpfc.compile_object(options)
sys.stdout.write(json.dumps(obj, sort_keys=True))
sys.stdout.flush()
os._exit(0)
"""


def _compiled(bpf_dir: Path, options: BpfOptions, *, split: bool,
              debug_info: bool = False) -> str:
    request = {"bpf_dir": str(bpf_dir), "options": {**options.__dict__, "self_tgid": 1},
               "split": split, "debug_info": debug_info}
    done = subprocess.run([sys.executable, "-c", COMPILE, json.dumps(request)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_split_the_declared_headers_and_no_debug_info_change_no_instruction(
        tmp_path: Path) -> None:
    assert ALL_TYPES.phases() == [["cpu.bpf.c"],
                                  ["offcpu.bpf.c", "memory.bpf.c", "lock.bpf.c", "proc.bpf.c"]]
    assert len(BpfOptions(user_stacks=True).phases()) == 1      # the default: one compile
    # copies, both taken now: nothing edited under the two compiles
    declared, included = tmp_path / "declared", tmp_path / "included"
    for d in (declared, included):
        d.mkdir()
        for f in bpf_loader.BPF_DIR.iterdir():
            if f.is_file():
                (d / f.name).write_bytes(f.read_bytes())
    # as before: one compile, BCC's debug information, telegen.h including the
    # two kernel headers it now declares the used parts of
    text = (included / "telegen.h").read_text()
    start = text.index("#ifdef __x86_64__\n")
    end = text.index("#endif\n", start) + len("#endif\n")
    assert "struct bpf_perf_event_data {" in text[start:end]
    (included / "telegen.h").write_text(text[:start] + KERNEL_HEADERS + text[end:])
    now = _compiled(declared, ALL_TYPES, split=True)
    assert _compiled(included, ALL_TYPES, split=False, debug_info=True) == now


def _stat(loaded: LoadedBpf, table: str, slot: int) -> int:
    t = loaded.table(table)
    return int(t.sum(t.Key(slot)).value)


def test_sampling_starts_before_the_rest_is_compiled_on_maps_every_program_shares(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGEN_CACHE_DIR", str(tmp_path))
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    sleeper = subprocess.Popen(["sh", "-c", "while :; do sleep 0.01; done"])
    try:
        loaded = LoadedBpf(ALL_TYPES, cache=False)
        try:
            marks = loaded.bpf.marks if loaded.bpf else {}
            assert marks["compiled"] < marks["sampling"] < marks["compiled_2"], marks
            before = _stat(loaded, "stats", 0)         # ST_CPU_SAMPLES, by the sampler
            assert before > 0                          # taken while the rest compiled
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                sum(range(10000))
            # the sampler (phase 1) and sched_switch (phase 2) count into the one
            # stats map the agent holds, and fill the one `seen` map
            assert _stat(loaded, "stats", 0) > before
            assert _stat(loaded, "stats", 1) > 0       # ST_OFFCPU_EVENTS
            pids = {k.pid for name in ("cpu_counts0", "cpu_counts1")
                    for k in loaded.table(name).keys()}
            assert busy.pid in pids and os.getpid() not in pids
            off = {k.pid for name in ("off_counts0", "off_counts1")
                   for k in loaded.table(name).keys()}
            assert sleeper.pid in off
        finally:
            loaded.close()
    finally:
        for p in (busy, sleeper):
            p.kill()
            p.wait()


def test_an_early_compile_is_taken_over_by_the_load_and_a_stray_one_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compile_early (called by `telegen run` once its config is parsed)
    starts the child at once; LoadedBpf with the same options takes it over
    (no second child) and its compile began before the load did. An early
    child for other options is killed and reaped by that load; with the
    object cached, nothing is started early."""
    monkeypatch.setenv("TELEGEN_CACHE_DIR", str(tmp_path))
    spawned: list[Any] = []
    spawn = bpf_child.spawn

    def counted(options: dict[str, Any]) -> Any:
        spawned.append(spawn(options))
        return spawned[-1]
    monkeypatch.setattr(bpf_child, "spawn", counted)
    options = BpfOptions(user_stacks=True)
    stray = BpfOptions(user_stacks=True, sample_rate=49, include_kernel=True)
    assert bpf_loader.compile_early(options) and bpf_loader.compile_early(stray)
    assert not bpf_loader.compile_early(options)          # one child per options
    time.sleep(0.5)
    t0 = time.monotonic()
    loaded = LoadedBpf(options)
    try:
        assert loaded.cache_outcome == "miss" and len(spawned) == 2
        assert loaded.bpf is not None and loaded.bpf.marks["child_start"] < t0
        assert spawned[1].process.poll() is not None       # the stray one: ended, reaped
        assert not bpf_loader._EARLY
    finally:
        loaded.close()
    assert not bpf_loader.compile_early(options)           # cached now: no child
    assert len(spawned) == 2
