"""The byte-level CFI decoder (telegen.unwind.cfi) against the former
pyelftools build (telegen.testing.pyelftools_cfi) on real libraries — the
tables must be identical row for row — and a Go binary's ``.debug_frame``
(which pyelftools cannot decode: RecursionError) against readelf."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from telegen.symbols.budget import ParseLimits
from telegen.testing.goprog import CPUHOG_SOURCE, build_go_program
from telegen.testing.pyelftools_cfi import pyelftools_table
from telegen.testing.pyprog import pyenv_python
from telegen.testing.require import prerequisite
from telegen.unwind.build import build_table, table_from_fd
from telegen.unwind.table import RSP, UnwindTable

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
# the reference takes ~10 s of CPU on libjvm (more on a loaded host): not its 20 s budget
REFERENCE_LIMITS = ParseLimits(step_cpu_s=600.0, object_cpu_s=600.0)
LIBJVM = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"   # setup-host: openjdk-17


def libpython312() -> str:
    python = pyenv_python("3.12")
    prerequisite(python is not None, "pyenv's CPython 3.12")
    assert python is not None
    lib = Path(python).resolve().parents[1] / "lib" / "libpython3.12.so.1.0"
    prerequisite(lib.exists(), f"{lib} (pyenv built with --enable-shared)")
    return str(lib)


def rows(table: UnwindTable) -> list[tuple[int, tuple[int, int, int, int]]]:
    return [(start, table.rules[i]) for start, i in zip(table.starts, table.indices,
                                                         strict=True)]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["libc", "libpython3.12", "libjvm"])
def test_tables_identical_to_the_pyelftools_build(which: str) -> None:
    path = {"libc": lambda: LIBC, "libpython3.12": libpython312, "libjvm": lambda: LIBJVM}[which]()
    prerequisite(os.path.exists(path), path)
    t0 = time.process_time()
    new = build_table(path)
    t1 = time.process_time()
    old = pyelftools_table(path, limits=REFERENCE_LIMITS)
    t2 = time.process_time()
    print(f"{which}: {len(new)} rows, {len(new.rules)} rules; "
          f"decoder {t1 - t0:.2f} s, pyelftools {t2 - t1:.2f} s of CPU")
    assert new.source == old.source == ".eh_frame"
    assert len(new) > 10_000
    assert rows(new) == rows(old)
    assert new.segments == old.segments and new.build_id == old.build_id
    mapped = table_from_fd(os.open(path, os.O_RDONLY | os.O_CLOEXEC), use_mmap=True)
    assert rows(mapped) == rows(new)


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_go_program(CPUHOG_SOURCE, cache_dir=tmp_path_factory.mktemp("go"))


def readelf_debug_frame(path: Path) -> list[tuple[int, str, str]]:
    """(loc, CFA, ra) of every row readelf prints for ``.debug_frame``."""
    text = subprocess.run(["readelf", "--debug-dump=frames-interp", str(path)], check=False,
                          capture_output=True, text=True).stdout
    text = text.partition("Contents of the .debug_frame section")[2]
    out, in_fde, header = [], False, []
    for line in text.splitlines():
        if " FDE " in line:
            in_fde = True
        elif " CIE" in line:
            in_fde = False
        elif line.strip().startswith("LOC"):
            header = line.split()
        elif in_fde and re.match(r"[0-9a-f]{16} ", line):
            cols = dict(zip(header, line.split(), strict=False))
            out.append((int(line[:16], 16), cols.get("CFA", ""), cols.get("ra", "u")))
    return out


def test_go_debug_frame_matches_readelf(go_binary: Path) -> None:
    """A pure Go binary (CGO_ENABLED=0) has no ``.eh_frame``: its frames are
    in a zlib-compressed ``.debug_frame`` of CIE version 3 with
    ``DW_CFA_def_cfa_offset_sf``; every row readelf prints is the table's."""
    table = build_table(str(go_binary))
    expected = readelf_debug_frame(go_binary)
    assert table.source == ".debug_frame" and len(expected) > 1000
    for loc, cfa, ra in expected:
        m = re.fullmatch(r"rsp\+(\d+)", cfa)
        assert m is not None and ra == "c-8", (hex(loc), cfa, ra)
        assert table.rule(loc) == (RSP, int(m.group(1)), 0, -8), hex(loc)
    print(f"go: {len(expected)} readelf rows agree ({len(table)} table rows)")


def test_remember_state_bomb_is_rejected_not_decoded(tmp_path: Path) -> None:
    """400 000 nested ``DW_CFA_remember_state``: rejected as a memory bomb at
    the 64th level, in well under a second."""
    from telegen.symbols.budget import Rejected
    from telegen.testing import native
    from telegen.testing.hostile_elf import add_section, remember_state_cfi

    base = native.compile_c("int f(void) { return 1; }\n", tmp_path / "base.so",
                            flags=("-O1", "-shared", "-fPIC", "-fno-asynchronous-unwind-tables"))
    subprocess.run(["objcopy", "--remove-section", ".eh_frame", "--remove-section",
                    ".eh_frame_hdr", str(base)], check=True, capture_output=True)
    bomb = add_section(base, ".debug_frame", remember_state_cfi(400_000, 0x1000, 0x100),
                       tmp_path / "bomb.so")
    t0 = time.process_time()
    with pytest.raises(Rejected) as exc:
        build_table(str(bomb))
    assert exc.value.reason == "memory" and time.process_time() - t0 < 1.0
