from __future__ import annotations

import pytest

from telegen.formats.top import format_value, header, render_top, top_rows
from telegen.pdata import ALLOC, CPU, INUSE, MUTEX, OFF_CPU, Frame, FrameKind, Line, Profile
from telegen.testing.pprof_checks import synthetic_profiles

S = 1_000_000_000
SEED_HEADER = "Flat      Flat%   Sum%    Cum       Cum%    Name"


def fn(name: str) -> Frame:
    return Frame(FrameKind.NATIVE, 0, None, (Line(name),))


def seed_cpu_profile() -> Profile:
    """The seed's CPU table: 60s total, the five rows it shows plus filler."""
    p = Profile(name="cpu", sample_types=CPU, default_sample_type="cpu")
    serve = fn("net/http.(*conn).serve")

    def add(stack: tuple[Frame, ...], secs: float) -> None:
        p.add(stack, [int(secs * 100), int(round(secs * S))])

    add((fn("encoding/json.(*decodeState).scanWhile"), serve), 15.2)
    add((serve,), 10.5)
    add((fn("runtime.mallocgc"),), 8.3)
    add((fn("compress/gzip.(*Reader).Read"),), 5.2)
    add((fn("database/sql.(*DB).queryDC"),), 4.1)
    for i in range(4):
        add((fn(f"filler.f{i}"),), 4.0)
    add((fn("filler.rest"),), 0.7)
    return p


def test_render_top_matches_the_seed_layout() -> None:
    lines = render_top(seed_cpu_profile(), n=5).splitlines()
    assert lines[0] == "Total CPU time: 60s"
    assert lines[1] == ""
    assert lines[2] == SEED_HEADER
    # rows 1, 2 and 4 are the seed's lines verbatim (the seed's rows 3 and 5 add
    # rounded percentages, 42.8 + 13.8, where we sum exactly: 56.7)
    assert lines[3] == ("15.20s    25.3%   25.3%   15.20s    25.3%   "
                        "encoding/json.(*decodeState).scanWhile")
    assert lines[4] == "10.50s    17.5%   42.8%   25.70s    42.8%   net/http.(*conn).serve"
    assert lines[5] == " 8.30s    13.8%   56.7%   8.30s     13.8%   runtime.mallocgc"
    assert lines[6] == " 5.20s     8.7%   65.3%   5.20s      8.7%   compress/gzip.(*Reader).Read"
    assert lines[7] == " 4.10s     6.8%   72.2%   4.10s      6.8%   database/sql.(*DB).queryDC"
    assert len(lines) == 8


def test_memory_table_uses_byte_units() -> None:
    p = Profile(name="alloc", sample_types=ALLOC)
    p.add((fn("encoding/json.(*decodeState).object"),), [10, 350 * 2**20])
    p.add((fn("bytes.makeSlice"),), [10, 220 * 2**20])
    p.add((fn("net/http.(*persistConn).readLoop"),), [10, 180 * 2**20])
    rest = int(1.2 * 2**30) - 750 * 2**20
    for i in range(3):
        p.add((fn(f"filler{i}"),), [1, rest // 3])
    lines = render_top(p, n=3).splitlines()
    assert lines[:3] == ["Total allocations: 1.2GB", "", SEED_HEADER]
    assert lines[3] == ("350MB     28.5%   28.5%   350MB     28.5%   "
                        "encoding/json.(*decodeState).object")
    assert lines[4] == "220MB     17.9%   46.4%   220MB     17.9%   bytes.makeSlice"
    assert lines[5].startswith("180MB     14.6%   61.0%   180MB ")


@pytest.mark.parametrize(("value", "unit", "text"), [
    (15_200_000_000, "nanoseconds", "15.20s"),
    (320_000_000, "nanoseconds", "320ms"),
    (60 * S, "nanoseconds", "60s"),
    (1500, "nanoseconds", "1.50us"),
    (7200 * S, "nanoseconds", "2hrs"),
    (350 * 2**20, "bytes", "350MB"),
    (int(1.2 * 2**30), "bytes", "1.2GB"),
    (16_425, "bytes", "16.04kB"),
    (0, "bytes", "0"),
    (1234, "count", "1234"),
    (3, "milliseconds", "3ms"),
])
def test_format_value(value: int, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


@pytest.mark.parametrize(("types", "label"), [
    (CPU, "Total CPU time"), (OFF_CPU, "Total Off-CPU time"), (ALLOC, "Total allocations"),
    (INUSE, "Total in-use memory"), (MUTEX, "Total lock delay"),
])
def test_header_label_by_type(types: tuple, label: str) -> None:  # type: ignore[type-arg]
    p = Profile(name="x", sample_types=types)
    p.add((fn("f"),), [1, 2])
    assert header(p).startswith(label + ": ")


def test_recursion_counts_cum_once_and_inlined_lines_are_entries() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    walk = fn("walk")
    inl = Frame(FrameKind.NATIVE, 0x10, None, (Line("inner"), Line("outer")))
    p.add((walk, walk, walk, fn("main")), [1, 60])
    p.add((inl, fn("main")), [1, 40])
    rows = {r.name: r for r in top_rows(p, n=0)}
    assert (rows["walk"].flat, rows["walk"].cum) == (60, 60)
    assert (rows["main"].flat, rows["main"].cum) == (0, 100)
    assert (rows["inner"].flat, rows["inner"].cum) == (40, 40)
    assert (rows["outer"].flat, rows["outer"].cum) == (0, 40)
    assert rows["walk"].cum_pct == pytest.approx(60.0)


def test_sort_order_and_sample_type_choice() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    p.add((fn("b"),), [5, 10])
    p.add((fn("a"),), [1, 10])
    p.add((fn("c"), fn("a")), [1, 30])
    assert [r.name for r in top_rows(p)] == ["c", "a", "b"]        # default: last type
    assert [r.name for r in top_rows(p, "samples")] == ["b", "a", "c"]
    assert [r.name for r in top_rows(p, n=2)] == ["c", "a"]
    p.default_sample_type = "samples"
    assert top_rows(p)[0].name == "b"
    ties = Profile(name="cpu", sample_types=CPU)
    for name in ("zeta", "alpha", "mid"):
        ties.add((fn(name),), [1, 10])
    assert [r.name for r in top_rows(ties)] == ["alpha", "mid", "zeta"]
    rows = top_rows(ties)
    assert [round(r.sum_pct, 1) for r in rows] == [33.3, 66.7, 100.0]


def test_unsymbolized_frames_collapse_per_object_file() -> None:
    cpu = synthetic_profiles()[0]
    names = [r.name for r in top_rows(cpu, n=0, node_fraction=0)]
    assert "[libc.so.6]" in names
    assert "<unknown>" in names                 # no mapping at all
    assert "[[kernel.kallsyms]]" in names       # what pprof prints for kernel addresses


def test_node_fraction_drops_tiny_entries_like_pprof() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    p.add((fn("big"),), [1, 1000])
    p.add((fn("tiny"),), [1, 4])
    assert [r.name for r in top_rows(p)] == ["big"]
    assert [r.name for r in top_rows(p, node_fraction=0)] == ["big", "tiny"]
