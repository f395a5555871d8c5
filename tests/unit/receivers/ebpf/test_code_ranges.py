"""receivers/ebpf/code_ranges.py: the code ranges BPF hashes stack words with."""

from __future__ import annotations

from typing import Any

from telegen.pdata import Mapping
from telegen.receivers.ebpf.code_ranges import CODE_RANGES, CodeRanges, merge


class _Leaf:
    def __init__(self) -> None:
        self.n = 0
        self.lo = [0] * CODE_RANGES
        self.hi = [0] * CODE_RANGES


class _Table(dict[int, Any]):
    """BCC's table subset CodeRanges uses (Key, Leaf, set, delete)."""
    Leaf = _Leaf

    @staticmethod
    def Key(pid: int) -> int:  # noqa: N802 - BCC's name
        return pid


def _maps(*spans: tuple[int, int]) -> list[Mapping]:
    return [Mapping(start=lo, limit=hi) for lo, hi in spans]


def test_touching_mappings_join_and_the_closest_merge_down_to_the_limit() -> None:
    assert merge(_maps((0x2000, 0x3000), (0x1000, 0x2000), (0x5000, 0x6000))) == \
        [(0x1000, 0x3000), (0x5000, 0x6000)]
    libs = [(0x7F00_0000_0000 + i * 0x10_0000, 0x7F00_0000_0000 + i * 0x10_0000 + 0x8000)
            for i in range(20)]
    spans = merge(_maps((0x5555_0000_0000, 0x5555_0010_0000), *libs))
    assert len(spans) == CODE_RANGES
    assert spans[0] == (0x5555_0000_0000, 0x5555_0010_0000)   # the far one stays apart
    for lo, hi in [(0x5555_0000_0000, 0x5555_0010_0000), *libs]:   # every byte still held
        assert any(a <= lo and hi <= b for a, b in spans)


def test_written_once_checked_and_forgotten() -> None:
    table = _Table()
    ranges = CodeRanges(table)
    maps = _maps((0x1000, 0x2000), (0x9000, 0xA000))
    ranges.write(7, maps)
    leaf = table[7]
    assert leaf.n == 2 and (leaf.lo[1], leaf.hi[1]) == (0x9000, 0xA000)
    table[7] = "untouched"
    ranges.write(7, maps)              # the same ranges: no map update
    assert table[7] == "untouched"
    assert ranges.covers(7, [0x1800, 0x9FFF])
    assert not ranges.covers(7, [0x1800, 0xA000])      # just past a range
    assert not ranges.covers(7, [0x500])
    assert not ranges.covers(8, [0x1800])              # nothing written for that pid
    ranges.forget([7, 8])
    assert 7 not in table and not ranges.covers(7, [0x1800])


class _FullTable(_Table):
    """A BPF map at max_entries: an update of a new key fails (E2BIG)."""

    def __setitem__(self, key: int, value: Any) -> None:
        raise OSError(7, "Argument list too long")


def test_a_full_map_is_counted_and_the_process_is_not_taken_as_written() -> None:
    ranges = CodeRanges(_FullTable())
    ranges.write(7, _maps((0x1000, 0x2000)))
    ranges.write(7, _maps((0x1000, 0x2000)))           # tried again: not remembered
    assert ranges.errors == 2
    assert not ranges.covers(7, [0x1800])     # BPF hashes its 64 words; keys are dropped
