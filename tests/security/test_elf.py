"""Crafted ELF/DWARF contents in front of the symbolizer and the unwinder.

Each crafted library is mapped by a tenant process running as ``nobody``
(``mapper``: mmaps it executable) and resolved through the real symbolizer or
unwind-table cache. Measured: wall time, the agent's peak RSS growth (VmHWM
after resetting it), what is counted and logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from elftools.elf.elffile import ELFFile

from telegen.procinfo import open_mapped
from telegen.symbols import Symbolizer, SymbolizerOptions
from telegen.symbols.budget import ParseLimits
from telegen.testing import require
from telegen.testing.hostile_elf import (
    TENANT_LIB_SOURCE,
    add_section,
    build,
    mapping_of,
    remember_state_cfi,
    set_section_flags,
    staging_dir,
    symbol_offset,
    tiny_units_dwarf,
    zlib_bomb_section,
)
from telegen.testing.native import LiveProcess
from telegen.testing.tenant import as_nobody, nobody_dir
from telegen.untrusted import Refusals
from telegen.unwind import TableCache

LOG = logging.getLogger("test.security.elf")
SHF_COMPRESSED = 0x800
MiB = 1 << 20
T = TypeVar("T")


@pytest.fixture(scope="module")
def stage() -> Iterator[Path]:
    require.prerequisite(os.geteuid() == 0, "root (the agent runs as root)")
    d = staging_dir("telegen-elf-")
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def home() -> Iterator[Path]:
    d = nobody_dir("telegen-elf-tenant-")
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_rss_growth(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and how far this process's peak RSS rose above its RSS before."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                          # reset VmHWM to the current RSS
    before = _status("VmRSS")
    result = fn()
    return result, _status("VmHWM") - before


def tenant_lib(stage: Path, home: Path, name: str, craft: Callable[[Path], Path],
               flags: tuple[str, ...] = ("-O1",)) -> Path:
    """A library built from TENANT_LIB_SOURCE, crafted, placed in nobody's home."""
    base = build(TENANT_LIB_SOURCE, stage / f"{name}.base.so", shared=True, flags=flags)
    crafted = craft(base)
    out = home / f"{name}.so"
    shutil.copy(crafted, out)
    os.chmod(out, 0o755)
    return out


def local_symbolizer(refusals: Refusals) -> Symbolizer:
    """A symbolizer with no debug directory and no debuginfod: the file alone."""
    return Symbolizer(SymbolizerOptions(debug_dirs=(), debuginfod_urls=[]), refusals=refusals)


def symbolize(sym: Symbolizer, pid: int, lib: Path, function: str,
              offsets_from: Path | None = None) -> tuple[str, str, float]:
    path = str(lib)
    m = mapping_of(pid, path)
    off = symbol_offset(offsets_from or lib, function)
    t0 = time.monotonic()
    res = sym.native(m.start - m.offset + off, file=path,
                     start=m.start, offset=m.offset, pid=pid)
    return (res.lines[0].function if res.lines else "", res.source, time.monotonic() - t0)


@pytest.mark.parametrize("bomb", ["shf_compressed_1GiB", "gnu_zdebug_1GiB", "gnu_zdebug_lying",
                                  "declared_8GiB"])
def test_compressed_debug_section_is_refused_before_it_is_inflated(
        stage: Path, home: Path, bomb: str) -> None:
    """``.debug_info`` inflating to 1 GiB of zeros (1 MB in the file, as an
    SHF_COMPRESSED section or an old-style ``.zdebug_info``), or declaring
    8 GiB, or an old-style one declaring 1 MiB and inflating to 1 GiB:
    pyelftools would inflate it whole. Refused from its declared (or
    boundedly counted) size; the library's symbol table still names it."""
    def craft(base: Path) -> Path:
        if bomb == "declared_8GiB":
            content = struct.pack("<IIQQ", 1, 0, 8 << 30, 1) + zlib.compress(bytes(MiB))
        elif bomb == "gnu_zdebug_lying":     # declares 1 MiB, inflates to 1 GiB
            content = zlib_bomb_section(1 << 30, gnu_zdebug=True)
            content = content[:4] + struct.pack(">Q", MiB) + content[12:]
        else:
            content = zlib_bomb_section(1 << 30, gnu_zdebug=bomb.startswith("gnu"))
        name = ".zdebug_info" if bomb.startswith("gnu") else ".debug_info"
        out = add_section(base, name, content, stage / f"{bomb}.so")
        if not bomb.startswith("gnu"):
            set_section_flags(out, name, SHF_COMPRESSED)
        return out
    lib = tenant_lib(stage, home, bomb, craft)
    with LiveProcess(as_nobody([str(stage / "mapper"), str(lib)])) as tenant:
        refusals = Refusals(None, LOG)
        sym = local_symbolizer(refusals)
        (name, source, took), growth = peak_rss_growth(
            lambda: symbolize(sym, tenant.pid, lib, "tenant_function_abc"))
    print(f"{bomb}: {took:.2f}s, peak RSS +{growth / MiB:.1f} MiB")
    assert (name, source) == ("tenant_function_abc", "symtab")
    assert growth < 50 * MiB
    assert took < 20
    assert refusals.counts == {("dwarf", "section_too_large"): 1}


def _backward_sibling(base: Path, out: Path) -> Path:
    """A copy of ``base`` whose first ``DW_AT_sibling`` points at its own DIE."""
    with open(base, "rb") as f:
        elf = ELFFile(f)
        info_at = elf.get_section_by_name(".debug_info")["sh_offset"]  # type: ignore[index]
        dwarf = elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            die = next((d for d in cu.iter_DIEs() if "DW_AT_sibling" in d.attributes), None)
            if die is not None:
                attr = die.attributes["DW_AT_sibling"]
                assert attr.form == "DW_FORM_ref4"
                where, value = info_at + attr.offset, die.offset - cu.cu_offset
                break
        else:
            raise AssertionError("gcc emitted no DW_AT_sibling")
    shutil.copy(base, out)
    with open(out, "r+b") as f:
        f.seek(where)
        f.write(struct.pack("<I", value))
    return out


OLD_WALK = """
import sys
from elftools.elf.elffile import ELFFile
with open(sys.argv[1], "rb") as f:
    cu = next(ELFFile(f).get_dwarf_info().iter_CUs())
    stack = [cu.get_top_DIE()]
    while stack:
        die = stack.pop()
        for child in die.iter_children():
            if child.has_children:
                stack.append(child)
print("finished")
"""


def test_backward_sibling_does_not_loop(stage: Path, home: Path) -> None:
    """A DIE whose DW_AT_sibling points back at itself: the walk through
    ``iter_children`` (as the symbolizer did) never ends; the forward walk
    names both functions from DWARF at once."""
    lib = tenant_lib(stage, home, "sibling", lambda b: _backward_sibling(b, stage / "sib.so"),
                     flags=("-O0", "-g"))
    try:                                   # the attack is real: the old walk loops
        subprocess.run([sys.executable, "-c", OLD_WALK, str(lib)], capture_output=True,
                       timeout=3, check=False)
        looped = False
    except subprocess.TimeoutExpired:
        looped = True
    assert looped
    with LiveProcess(as_nobody([str(stage / "mapper"), str(lib)])) as tenant:
        sym = local_symbolizer(Refusals(None, LOG))
        for function in ("tenant_function_abc", "tenant_other_def"):
            name, source, took = symbolize(sym, tenant.pid, lib, function)
            assert (name, source) == (function, "dwarf")
            assert took < 10


def test_index_budget_skips_the_dwarf_counts_and_logs_once(
        stage: Path, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """300 000 minimal compile units (8 MB; ~13 s of pyelftools CPU when it
    walked them in the agent; the index child reads them in 0.25 s of CPU but
    needs ~200 MB for them) in two libraries: each index build is stopped at
    the child's address-space limit (200 MiB here), the DWARF skipped (the
    symbol table names the functions), counted as rejected{memory}, logged
    once for both; the agent itself does not grow."""
    def units(count: int) -> Callable[[Path], Path]:
        info, abbrev = tiny_units_dwarf(count)

        def craft(base: Path) -> Path:
            with_abbrev = add_section(base, ".debug_abbrev", abbrev, stage / f"u{count}a.so")
            return add_section(with_abbrev, ".debug_info", info, stage / f"u{count}.so")
        return craft
    libs = [tenant_lib(stage, home, f"units{i}", units(300_000 + i)) for i in range(2)]
    rejected: dict[str, int] = {}

    class Count:
        def __init__(self, reason: str) -> None:
            self.reason = reason

        def add(self, n: int = 1) -> None:
            rejected[self.reason] = rejected.get(self.reason, 0) + n

    with LiveProcess(as_nobody([str(stage / "mapper"), *map(str, libs)])) as tenant:
        refusals = Refusals(None, LOG)
        sym = Symbolizer(SymbolizerOptions(
            debug_dirs=(), debuginfod_urls=[], index_dir=str(stage / "index"),
            parse_limits=ParseLimits(object_cpu_s=1.0, step_memory_bytes=200 << 20)),
            refusals=refusals, rejected_counter=Count)
        with caplog.at_level(logging.DEBUG, logger=LOG.name):
            (results, growth) = peak_rss_growth(lambda: [
                symbolize(sym, tenant.pid, lib, "tenant_function_abc") for lib in libs])
            again = symbolize(sym, tenant.pid, libs[0], "tenant_other_def")
    assert growth < 50 * MiB
    for name, source, took in results:
        print(f"rejected after {took:.2f}s")
        assert (name, source) == ("tenant_function_abc", "symtab") and took < 30
    assert again[:2] == ("tenant_other_def", "symtab") and again[2] < 0.5   # not built again
    assert rejected == {"memory": 2}
    assert refusals.counts[("dwarf", "memory")] == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "memory" in r.getMessage()]
    assert len(warnings) == 1


def test_memory_budget_skips_a_cfi_bomb(stage: Path, home: Path) -> None:
    """400 000 ``DW_CFA_remember_state`` in one FDE: pyelftools keeps a copy of
    the row per instruction. The table build stops at its memory budget (48 MiB
    here), the library gets an empty table, counted rejected{memory}, and is
    not built again."""
    def craft(base: Path) -> Path:
        subprocess.run(["objcopy", "--remove-section", ".eh_frame", "--remove-section",
                        ".eh_frame_hdr", str(base)], check=True, capture_output=True)
        return add_section(base, ".debug_frame", remember_state_cfi(400_000, 0x1000, 0x100),
                           stage / "cfibomb.so")
    lib = tenant_lib(stage, home, "cfibomb", craft,
                     flags=("-O1", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"))
    limits = ParseLimits(step_cpu_s=300, object_cpu_s=300, step_memory_bytes=48 * MiB)
    with LiveProcess(as_nobody([str(stage / "mapper"), str(lib)])) as tenant:
        tables = TableCache(disk=False, limits=limits)
        mapped = open_mapped(tenant.pid, str(lib), mapping_of(tenant.pid, str(lib)).start)
        assert mapped is not None
        with mapped:
            t0 = time.monotonic()
            table, growth = peak_rss_growth(lambda: tables.get(mapped, ""))
            took = time.monotonic() - t0
            t1 = time.monotonic()
            assert tables.get(mapped, "") is table and time.monotonic() - t1 < 0.5
    print(f"cfi bomb: rejected after {took:.2f}s, peak RSS +{growth / MiB:.1f} MiB")
    assert not table.has_cfi
    assert tables.rejected == {"memory": 1}
    assert growth < 48 * MiB + 100 * MiB          # the budget plus one poll's overshoot
    assert took < 120


@pytest.mark.parametrize("damage", ["shentsize_zero", "section_past_eof", "too_many_sections",
                                    "extended_count_huge", "phentsize_wrong"])
def test_malformed_headers_are_refused_before_pyelftools(stage: Path, home: Path,
                                                         damage: str) -> None:
    """Header tables pyelftools would believe: an ``e_shentsize`` of 0 (the same
    header read again up to the section count), a section past the end of the
    file, 60 000 sections declared in a small file, an extended section count
    (section 0's ``sh_size``) of 2**40, a wrong program-header size. Each is
    refused by the struct-level check (``bad_elf``) in well under a second."""
    def craft(base: Path) -> Path:
        out = stage / f"{damage}.so"
        shutil.copy(base, out)
        with open(out, "rb") as f:
            elf = ELFFile(f)
            shoff, shentsize = elf["e_shoff"], elf["e_shentsize"]
            text_hdr = shoff + shentsize * next(
                i for i, s in enumerate(elf.iter_sections()) if s.name == ".text")
        with open(out, "r+b") as f:
            if damage == "shentsize_zero":
                f.seek(0x3A)
                f.write(struct.pack("<H", 0))
            elif damage == "section_past_eof":
                f.seek(text_hdr + 0x18)
                f.write(struct.pack("<Q", 1 << 40))
            elif damage == "too_many_sections":
                f.seek(0x3C)
                f.write(struct.pack("<H", 60_000))
            elif damage == "extended_count_huge":
                f.seek(0x3C)
                f.write(struct.pack("<H", 0))
                f.seek(shoff + 0x20)
                f.write(struct.pack("<Q", 1 << 40))
            else:
                f.seek(0x36)
                f.write(struct.pack("<H", 24))
        return out
    lib = tenant_lib(stage, home, damage, craft)
    with LiveProcess(as_nobody([str(stage / "mapper"), str(lib)])) as tenant:
        refusals = Refusals(None, LOG)
        sym = local_symbolizer(refusals)
        name, _source, took = symbolize(sym, tenant.pid, lib, "tenant_function_abc",
                                        offsets_from=stage / f"{damage}.base.so")
        tables = TableCache(disk=False)
        mapped = open_mapped(tenant.pid, str(lib), mapping_of(tenant.pid, str(lib)).start)
        assert mapped is not None
        with mapped:
            assert not tables.get(mapped, "").has_cfi
    assert name == "" and took < 1.0
    assert refusals.counts == {("mapped_file", "bad_elf"): 1}
