"""Kernel frames from /proc/kallsyms; JIT frames of a live Node process from its perf map."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from native_programs import NODE_PROGRAM

from telegen.pdata import Frame, FrameKind, Mapping
from telegen.symbols.kallsyms import KernelSymbols
from telegen.testing import require
from telegen.testing.native import LiveProcess, read_maps

pytestmark = pytest.mark.slow


def _kallsyms_text() -> list[tuple[int, str, str]]:
    out = []
    with open("/proc/kallsyms") as fh:
        for line in fh:
            p = line.split()
            if p[1] in "Tt" and int(p[0], 16):
                out.append((int(p[0], 16), p[2], p[3][1:-1] if len(p) > 3 else ""))
    if not out:
        pytest.fail("/proc/kallsyms shows no addresses: run as root (kptr_restrict)")
    return out


def test_kernel_frames_named_when_included(harness) -> None:
    syms = _kallsyms_text()
    by_addr: dict[int, set[str]] = {}
    for addr, name, _mod in syms:
        by_addr.setdefault(addr, set()).add(name)
    wanted = [s for s in syms if s[1] in ("schedule", "do_nanosleep", "hrtimer_nanosleep")]
    assert wanted
    kmap = Mapping(file="[kernel.kallsyms]")
    stack = tuple(Frame(FrameKind.KERNEL, addr + 1, kmap) for addr, _, _ in wanted)
    user = Frame(FrameKind.NATIVE, 0x1234, None)
    kept = harness(include_kernel=True).run(stack + (user,), pid=1)
    assert [f.name for f in kept[:-1]] == [n for _, n, _ in wanted]
    assert kept[-1] is user or kept[-1] == user            # unresolvable: kept as is
    dropped = harness(include_kernel=False).run(stack + (user,), pid=1)
    assert dropped == (user,)


def test_kernel_module_names_are_kept() -> None:
    syms = _kallsyms_text()
    modules = [s for s in syms if s[2]]
    if not modules:
        pytest.skip("this kernel has no loaded modules with text symbols")
    ks = KernelSymbols()
    addr, name, mod = modules[0]
    assert ks.lookup(addr)[:2] in {(n, m) for a, n, m in syms if a == addr}
    assert ks.lookup(addr)[1] == mod and name


def test_node_perf_basic_prof_names(tmp_path: Path, harness) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    script = tmp_path / "hot.js"
    script.write_text(NODE_PROGRAM)
    h = harness()
    with LiveProcess([node, "--perf-basic-prof", str(script)], cwd=str(tmp_path)) as live:
        perf_map = Path(f"/tmp/perf-{live.pid}.map")
        try:
            # ask before the function exists in the map: the reader must re-read later
            early = h.run((Frame(FrameKind.NATIVE, 0x10, Mapping(file="")),), live.pid)
            assert early[0].lines == ()
            entry = None
            deadline = time.monotonic() + 30
            while entry is None and time.monotonic() < deadline:
                time.sleep(0.2)
                for line in perf_map.read_text().splitlines():
                    start, size, name = line.split(" ", 2)
                    if "telegenHotLoop" in name:
                        entry = (int(start, 16), int(size, 16), name)
            assert entry is not None, "node wrote no perf-map entry for telegenHotLoop"
            start, size, name = entry
            addr = start + size // 2
            m = next(m for m in read_maps(live.pid) if m.start <= addr < m.limit)
            assert not m.file or m.file.startswith("[anon")      # JIT code: anonymous memory
            (out,) = h.run((Frame(FrameKind.NATIVE, addr, m.mapping()),), live.pid)
        finally:
            pid = live.pid
        assert "telegenHotLoop" in out.name
        assert out.name == name
        assert h.counter("symbolize_frames", source="perfmap") == 1
    if os.path.exists(f"/tmp/perf-{pid}.map"):
        os.unlink(f"/tmp/perf-{pid}.map")


def test_python_perf_map_if_available(tmp_path: Path, harness) -> None:
    """Python 3.12 ``-X perf`` writes the same format (py::function:file)."""
    import glob

    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3.1*")))
    py = next((p for p in found if p[-1].isdigit()), None)    # pyenv's shims need a version
    require.prerequisite(py is not None, "pyenv's CPython >= 3.12")
    assert py is not None
    code = ("import sys,time\ndef telegen_py_hot():\n    return sum(range(1000))\n"
            "print('ready', flush=True)\nwhile True:\n    telegen_py_hot(); time.sleep(0.01)\n")
    with LiveProcess([py, "-X", "perf", "-c", code]) as live:
        perf_map = Path(f"/tmp/perf-{live.pid}.map")
        entry = None
        for _ in range(100):
            if perf_map.exists():
                for line in perf_map.read_text().splitlines():
                    if "telegen_py_hot" in line:
                        s, n, name = line.split(" ", 2)
                        entry = (int(s, 16), int(n, 16), name)
            if entry:
                break
            time.sleep(0.1)
        assert entry is not None
        out = harness().run((Frame(FrameKind.JIT, entry[0] + entry[1] // 2, None),), live.pid)
        pid = live.pid
    assert out[0].name == entry[2] and "telegen_py_hot" in out[0].name
    subprocess.run(["rm", "-f", f"/tmp/perf-{pid}.map"], check=False)
