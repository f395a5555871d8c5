"""C programs: split debug info served by a real debuginfod, inlined frames,
frames with no symbols anywhere, libc frames of a live process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from native_programs import C_PROGRAM

from telegen.pdata import Frame, FrameKind
from telegen.symbols.elf import ElfFile, read_build_id
from telegen.testing.native import (
    LiveProcess,
    addr2line,
    compile_c,
    nm,
    process_frame,
    read_maps,
    split_debug,
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stripped(tmp_path: Path) -> tuple[Path, Path]:
    """(stripped -O2 binary, its split debug file in a directory of its own)."""
    binary = compile_c(C_PROGRAM, tmp_path / "stripped")
    served = tmp_path / "served"
    served.mkdir()
    split_debug(binary, served / "stripped.debug")
    return binary, served / "stripped.debug"


@pytest.fixture
def debuginfod_server(tmp_path: Path, stripped: tuple[Path, Path]):
    """A real debuginfod indexing only the split debug file; yields its URL."""
    if shutil.which("debuginfod") is None:
        pytest.fail("debuginfod is not installed (scripts/setup-host.sh installs it)")
    _binary, debug = stripped
    port = _free_port()
    log = open(tmp_path / "debuginfod.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["debuginfod", "-F", str(debug.parent), "-p", str(port),
         "-d", str(tmp_path / "debuginfod.sqlite"), "-t", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    probe = f"{url}/buildid/{read_build_id(str(debug))}/debuginfo"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(probe, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("debuginfod did not serve the debug file: "
                            + (tmp_path / "debuginfod.log").read_text()[-2000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_stripped_binary_named_through_debuginfod(tmp_path, stripped, debuginfod_server,
                                                 harness):
    binary, debug = stripped
    assert ElfFile(str(binary)).symbols(".symtab") is None      # really stripped
    syms = nm(debug)
    h = harness(debuginfod_urls=[debuginfod_server], debug_dirs=[str(tmp_path / "nothing")])
    with LiveProcess([str(binary)]) as live:
        stack = tuple(process_frame(live.pid, str(binary), syms[name] + 4)
                      for name in ("leaf_compute", "outer_work", "main"))
        out = h.run(stack, live.pid)
    assert len(out) == 3
    for frame, name in zip(out, ("leaf_compute", "outer_work", "main"), strict=True):
        vaddr = syms[name] + 4
        want = addr2line(debug, vaddr)          # binutils on the split file: the reference
        assert frame.name == name == want[-1][0]
        assert [(ln.function, os.path.basename(ln.file), ln.line) for ln in frame.lines] == \
            [(f, os.path.basename(p), n) for f, p, n in want]
        assert frame.lines[-1].file.endswith("stripped.c")
        assert frame.mapping is not None and frame.mapping.has_line_numbers
    assert h.counter("symbolize_frames", source="debuginfod") == 3
    assert h.counter("debuginfod_hits") >= 1
    cached = tmp_path / "debuginfod-cache" / read_build_id(str(debug)) / "debuginfo"
    assert read_build_id(str(cached)) == read_build_id(str(binary))


def test_no_symbols_anywhere_gives_binary_plus_offset(tmp_path, stripped, harness):
    binary, debug = stripped
    vaddr = nm(debug)["leaf_compute"] + 4
    elf = ElfFile(str(binary))
    seg = next(s for s in elf.segments if s.vaddr <= vaddr < s.vaddr + s.memsz)
    file_offset = vaddr - seg.vaddr + seg.offset
    h = harness(debug_dirs=[str(tmp_path / "nothing")])
    with LiveProcess([str(binary)]) as live:
        frame = process_frame(live.pid, str(binary), vaddr)
        (out,) = h.run((frame,), live.pid)
    assert out.lines == ()
    assert out.name == f"stripped+0x{file_offset:x}"
    assert h.counter("symbolize_unknown_frames") == 1


def test_inlined_function_is_its_own_line(c_program, harness):
    elf = ElfFile(str(c_program))
    table = elf.symbols(".symtab")
    assert table is not None
    i = table.names.index("outer_work")
    lo, hi = table.starts[i], table.ends[i]
    # the reference: the first address addr2line reports as inner_step inlined into outer_work
    found = None
    for vaddr in range(lo, hi):
        ref = addr2line(c_program, vaddr)
        if len(ref) == 2 and ref[0][0] == "inner_step":
            found = (vaddr, ref)
            break
    assert found is not None, "gcc did not inline inner_step (see addr2line)"
    vaddr, ref = found
    h = harness()
    with LiveProcess([str(c_program)]) as live:
        (out,) = h.run((process_frame(live.pid, str(c_program), vaddr),), live.pid)
    assert [ln.function for ln in out.lines] == ["inner_step", "outer_work"]
    assert [(os.path.basename(ln.file), ln.line) for ln in out.lines] == \
        [(os.path.basename(f), n) for _, f, n in ref]
    assert out.mapping is not None and out.mapping.has_inline_frames
    assert h.counter("symbolize_frames", source="dwarf") == 1


def _eu_stack(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["eu-stack", "-p", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    frames = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("#") and len(parts) >= 2:
            name = parts[2].split("@")[0] if len(parts) > 2 else ""   # symbol versions
            frames.append((int(parts[1], 16), name))
    return frames


def test_libc_frames_of_a_live_process(c_program, harness):
    """The real stack of a sleeping process (eu-stack gives the addresses), as the
    receiver would send it: leaf as is, callers at return address - 1."""
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    h = harness()
    with LiveProcess([str(c_program)]) as live:
        stack_ref: list[tuple[int, str]] = []
        for _ in range(50):
            stack_ref = _eu_stack(live.pid)
            if any("sleep" in n for _, n in stack_ref):
                break
            time.sleep(0.05)
        maps = read_maps(live.pid)
        frames = []
        for depth, (pc, _name) in enumerate(stack_ref):
            addr = pc if depth == 0 else pc - 1
            m = next(m for m in maps if m.start <= addr < m.limit)
            frames.append(Frame(FrameKind.NATIVE, addr, m.mapping()))
        out = h.run(tuple(frames), live.pid)
    aliases = _aliases(libc)
    libc_frames = [(f, ref) for f, ref in zip(out, stack_ref, strict=True)
                   if f.mapping and os.path.realpath(f.mapping.file) == libc]
    assert libc_frames, stack_ref
    names = [f.name for f, _ in libc_frames]
    for frame, (_pc, ref_name) in libc_frames:   # same function as elfutils says
        assert ref_name and (frame.name == ref_name
                             or aliases.get(frame.name.lstrip("_")) == aliases.get(
                                 ref_name.lstrip("_"))), (frame.name, ref_name)
    assert "nanosleep" in names or "clock_nanosleep" in names
    assert "main" in [f.name for f in out]
    dbg = f"/usr/lib/debug/.build-id/{ElfFile(libc).build_id[:2]}/"
    if os.path.isdir(dbg):    # libc6-dbg: local functions have names too
        assert "__libc_start_call_main" in names


def _aliases(lib: str) -> dict[str, int]:
    """Function name (without leading underscores) → address, from every table."""
    out: dict[str, int] = {}
    for name, addr in nm(lib, dynamic=True).items():
        out.setdefault(name.lstrip("_"), addr)
    bid = ElfFile(lib).build_id
    debug = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
    if os.path.exists(debug):
        for name, addr in nm(debug).items():
            out.setdefault(name.lstrip("_"), addr)
    return out


def test_binary_deleted_while_running_is_read_through_its_mapping(c_program, harness,
                                                                   tmp_path):
    """An upgraded binary's old copy is gone from the tree but still running:
    its frames are named (and its unwind table built) through
    /proc/PID/map_files, the mapping the process still holds."""
    from telegen.procinfo import open_mapped
    from telegen.unwind.build import build_table

    binary = tmp_path / "old_version"
    shutil.copy(c_program, binary)
    syms = nm(binary)
    h = harness()
    with LiveProcess([str(binary)]) as live:
        stack = tuple(process_frame(live.pid, str(binary), syms[name] + 4)
                      for name in ("leaf_compute", "outer_work", "main"))
        binary.unlink()
        mapping = stack[0].mapping
        assert mapping is not None
        mapped = open_mapped(live.pid, f"{mapping.file} (deleted)", mapping.start)
        assert mapped is not None                      # through map_files: the path is gone
        with mapped:
            assert not os.path.exists(f"/proc/{live.pid}/root{mapped.path}")
            assert len(build_table(mapped.fd)) > 0     # the CFI table, from the mapping
        out = h.run(stack, live.pid)
    assert [f.name for f in out] == ["leaf_compute", "outer_work", "main"]
