"""A symbolized profile encoded as pprof reads back in ``go tool pprof`` with the
same names and lines (inlined callee included)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from telegen.formats import pprof
from telegen.pdata import CPU, Profile, Profiles, make_labels
from telegen.symbols.elf import ElfFile
from telegen.testing.native import LiveProcess, addr2line, nm, process_frame

pytestmark = pytest.mark.slow


def test_go_tool_pprof_shows_symbolized_lines(tmp_path: Path, c_program: Path, harness) -> None:
    if shutil.which("go") is None:
        pytest.fail("go is not installed (scripts/setup-host.sh installs golang-go)")
    syms = nm(c_program)
    table = ElfFile(str(c_program)).symbols(".symtab")
    assert table is not None
    i = table.names.index("outer_work")
    inlined = next(a for a in range(table.starts[i], table.ends[i])
                   if len(addr2line(c_program, a)) == 2)
    h = harness()
    with LiveProcess([str(c_program)]) as live:
        leaf = process_frame(live.pid, str(c_program), syms["leaf_compute"] + 4)
        inl = process_frame(live.pid, str(c_program), inlined)
        main = process_frame(live.pid, str(c_program), syms["main"] + 4)
        profile = Profile(name="cpu", sample_types=CPU, period=10_000_000)
        profile.add((leaf, main), [3, 30_000_000], make_labels(**{"process.pid": live.pid}))
        profile.add((inl, main), [5, 50_000_000], make_labels(**{"process.pid": live.pid}))
        h.proc.consume(Profiles([profile]))
    out = h.sink.profiles()[-1]
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(pprof.encode(out))
    text = subprocess.run(["go", "tool", "pprof", "-top", "-lines", "-symbolize=none",
                           str(path)], capture_output=True, text=True, check=True).stdout
    expected = []
    for frames in (s.stack for s in out):
        for frame in frames:
            for ln in frame.lines:
                expected.append(f"{ln.function} {ln.file}:{ln.line}")
    assert expected
    for entry in expected:
        assert entry in text, (entry, text)
    ref = addr2line(c_program, inlined)
    assert f"inner_step {ref[0][1]}:{ref[0][2]} (inline)" in text or \
        f"inner_step {os.path.normpath(ref[0][1])}:{ref[0][2]} (inline)" in text, text
