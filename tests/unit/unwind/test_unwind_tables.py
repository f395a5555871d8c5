"""Unwind tables built from real binaries, checked against binutils' readelf
(``--debug-dump=frames-interp``, the reference decoder), plus the table's
serialization, the build-id cache and load-bias selection."""

from __future__ import annotations

import re
import subprocess
from array import array
from pathlib import Path

import pytest

from telegen.pdata import Mapping
from telegen.testing import native
from telegen.unwind import AddressSpace, TableCache, unwind
from telegen.unwind.build import build_table
from telegen.unwind.table import OUTERMOST, RBP, RSP, Segment, TableBuilder, UnwindTable
from telegen.unwind.unwinder import NO_CFI

WORKLOADS = Path(__file__).resolve().parents[2] / "testdata" / "workloads"
NOFP = ("-O2", "-g", "-fomit-frame-pointer", "-pthread")
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture(scope="module")
def nofp_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("unwind") / "tg_nofp"
    return native.compile_c((WORKLOADS / "tg_nofp.c").read_text(), out, flags=NOFP)


def readelf_rows(path: str) -> list[tuple[int, int, str, str, str]]:
    """(loc, FDE end, CFA, rbp, ra) for every row readelf prints."""
    # readelf exits 1 on libc (a warning about an unknown note) but prints everything
    text = subprocess.run(["readelf", "--debug-dump=frames-interp", path], check=False,
                          capture_output=True, text=True).stdout
    rows = []
    end = 0
    header: list[str] = []
    for line in text.splitlines():
        m = re.search(r"FDE cie=\w+ pc=([0-9a-f]+)\.\.([0-9a-f]+)", line)
        if m:
            end = int(m.group(2), 16)
            continue
        if " CIE" in line:                  # a CIE's own rows are not code addresses
            end = 0
            continue
        if line.strip().startswith("LOC"):
            header = line.split()
            continue
        parts = line.split()
        if "(" in line:                     # register rules ("r10 (r10)"): not columnar
            continue
        if end and header and parts and re.fullmatch(r"[0-9a-f]{16}", parts[0]):
            cols = dict(zip(header, parts, strict=False))
            rows.append((int(parts[0], 16), end, cols.get("CFA", ""), cols.get("rbp", "u"),
                         cols.get("ra", "u")))
    return rows


@pytest.mark.parametrize("which", ["program", "libc"])
def test_rules_match_readelf(nofp_binary: Path, which: str) -> None:
    path = str(nofp_binary) if which == "program" else LIBC
    table = build_table(path)
    rows = readelf_rows(path)
    assert table.source == ".eh_frame" and len(rows) > 10
    checked = expressions = 0
    for loc, _end, cfa, rbp, ra in rows:
        kind, cfa_off, rbp_off, ra_off = table.rule(loc)
        if ra == "u":                       # return address undefined: outermost frame
            assert kind == OUTERMOST, hex(loc)
            checked += 1
            continue
        m = re.fullmatch(r"(rsp|rbp)\+(\d+)", cfa)
        plain = all(re.fullmatch(r"u|c-?\d+", col) for col in (rbp, ra))
        if m is None or not plain:  # expressions (PLT, signal frames), register rules
            assert kind not in (RSP, RBP), (hex(loc), cfa)
            expressions += 1
            continue
        assert kind == (RSP if m.group(1) == "rsp" else RBP), (hex(loc), cfa)
        assert cfa_off == int(m.group(2)), (hex(loc), cfa)
        assert ra_off == int(ra[1:]) if ra.startswith("c") else True
        assert rbp_off == (int(rbp[1:]) if rbp.startswith("c") else 0), (hex(loc), rbp)
        checked += 1
    print(f"{which}: {checked} rows agree with readelf ({len(table)} table rows, "
          f"{len(table.rules)} distinct rules)")
    assert checked + expressions == len(rows) and expressions < 0.01 * len(rows) + 5


def test_serialization_round_trip(nofp_binary: Path) -> None:
    table = build_table(LIBC)
    again = UnwindTable.from_bytes(table.to_bytes())
    assert list(again.starts) == list(table.starts)
    assert [again.rules[i] for i in again.indices] == [table.rules[i] for i in table.indices]
    assert again.segments == table.segments
    with pytest.raises(ValueError):
        UnwindTable.from_bytes(b"NOTATABL" + table.to_bytes()[8:])
    with pytest.raises(ValueError):
        UnwindTable.from_bytes(table.to_bytes()[:-100])


def test_cache_builds_once_per_build_id(nofp_binary: Path, tmp_path: Path) -> None:
    from telegen.symbols.elf import read_build_id

    build_id = read_build_id(str(nofp_binary))
    assert build_id
    first = TableCache(4, cache_dir=tmp_path)
    t1 = first.get(str(nofp_binary), build_id)
    assert first.get(str(nofp_binary), build_id) is t1           # memory hit
    assert (first.built, first.loaded) == (1, 0)
    stored = list(tmp_path.glob(f"{build_id}-*.unw"))       # build-id + content digest
    assert len(stored) == 1
    second = TableCache(4, cache_dir=tmp_path)                    # a new agent run
    t2 = second.get(str(nofp_binary), build_id)                   # served from disk
    assert (second.built, second.loaded) == (0, 1)
    assert list(t2.starts) == list(t1.starts) and t2.source == ".eh_frame"
    # a build-id alone serves nothing: the file must be there to be checked
    unverifiable = second.get("/nonexistent/path", build_id)
    assert not unverifiable.has_cfi and second.failed == 1


def test_load_bias_prefers_the_segment_covering_the_mapping() -> None:
    # Rust-style layout: the executable segment starts inside the page where
    # the read-only one ends, so file page 0x16000 belongs to both.
    segs = [Segment(0x0, 0x0, 0x16ECC), Segment(0x17ED0, 0x16ED0, 0x3FB30)]
    table = UnwindTable(array("Q"), array("I"), [], segs)
    start = 0x5555_0000_0000
    bias = table.load_bias(start, 0x16000, 0x40000)
    assert bias is not None and (start + 0xED0) - bias == 0x17ED0
    assert table.load_bias(start, 0x0, 0x1000) == start
    assert table.load_bias(start, 0x100000, 0x1000) is None


def test_builder_marks_gaps_between_functions() -> None:
    b = TableBuilder()
    b.add(0x1000, 0x1010, (RSP, 8, 0, -8))
    b.add(0x1010, 0x1020, (RSP, 16, 0, -8))
    b.add(0x2000, 0x2010, (RSP, 8, 0, -8))
    t = b.build([])
    assert t.rule(0x1005)[:2] == (RSP, 8) and t.rule(0x1015)[:2] == (RSP, 16)
    assert t.rule(0x1800)[0] == 5 and t.rule(0x0FFF)[0] == 5 and t.rule(0x2010)[0] == 5


def _space(rules: dict[int, tuple[int, int, int, int]]) -> AddressSpace:
    """One executable mapping [0x1000, 0x9000) whose table has ``rules`` by
    function start (each function 0x100 bytes); other code has no CFI."""
    b = TableBuilder()
    for start, rule in rules.items():
        b.add(start, start + 0x100, rule)
    table = b.build([Segment(0x0, 0x0, 0x10000)])
    return AddressSpace([Mapping(start=0x1000, limit=0x9000, offset=0x1000, file="/x")],
                        lambda m: table)


def test_unwinder_mixes_cfi_and_frame_pointers_unless_dwarf() -> None:
    # leaf at 0x1010 (CFI: cfa=rsp+8) -> mid at 0x5010 (no CFI, built with frame
    # pointers: push rbp; mov rbp,rsp) -> outer at 0x2010 (CFI: outermost)
    sp = 0x7FFF_0000
    words = [0x5011,                  # leaf's return address into mid (sp)
             0, 0,                    # mid's locals
             0, 0x2011]               # mid's frame: saved rbp, return into outer
    stack = b"".join(w.to_bytes(8, "little") for w in words) + bytes(64)
    bp = sp + 24                      # mid's rbp points at its saved rbp
    space = _space({0x1000: (RSP, 8, 0, -8), 0x2000: (OUTERMOST, 0, 0, 0)})
    res = unwind(space, 0x1010, sp, bp, stack)
    assert res.addresses == (0x1010, 0x5011, 0x2011)
    assert not res.complete and res.reason == NO_CFI    # frame pointers stood in
    only_cfi = unwind(space, 0x1010, sp, bp, stack, frame_pointers=False)
    assert only_cfi.addresses == (0x1010, 0x5011) and only_cfi.reason == NO_CFI
    # all CFI: complete
    space = _space({0x1000: (RSP, 8, 0, -8), 0x5000: (RSP, 32, 0, -8),
                    0x2000: (OUTERMOST, 0, 0, 0)})
    full = unwind(space, 0x1010, sp, bp, stack, frame_pointers=False)
    assert full.addresses == (0x1010, 0x5011, 0x2011) and full.complete
