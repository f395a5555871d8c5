"""Compact per-binary unwind tables (x86-64).

A table is built once per object file from its CFI (``.eh_frame`` or
``.debug_frame``, see :mod:`telegen.unwind.build`) and holds, for every
address range with its own unwind rule, the row's start address (link-time
virtual address) and an index into a small list of distinct rules. Looking a
pc up is a ``bisect`` over the sorted starts; results are memoized per pc,
so the unwinder's hot path is one dict hit per frame.

A rule says how to find the caller's frame from this one::

    (kind, cfa_offset, rbp_offset, ra_offset)

* ``kind`` — ``RSP``: CFA = rsp + cfa_offset; ``RBP``: CFA = rbp + cfa_offset;
  ``PLT``: the PLT stub expression (CFA = rsp + 8, + 8 more past the
  stub's push; ``cfa_offset`` holds the threshold on ``pc & 15``);
  ``OUTERMOST``: the return address is undefined (``_start``, ``clone3``):
  the stack is complete here; ``UNSUPPORTED``: another DWARF expression or
  register (signal frames, stack realignment); ``NONE``: no CFI covers pc.
* ``rbp_offset`` — where the caller's rbp is saved, relative to the CFA,
  or 0 when this frame leaves rbp untouched.
* ``ra_offset`` — where the return address is saved, relative to the CFA.

Serialized form (the on-disk cache, :mod:`telegen.index.header`, kind
``cfi``): fixed-width sections — the starts as ``Q``, the rule indices as
``I``, the rules as ``qqqq``, the PT_LOAD segments as ``QQQ`` and the CFI
section's name. A table read from a file uses the starts and indices *in
place* (``memoryview`` casts over the file's ``mmap``): no Python object per
row; only the few hundred distinct rules become tuples.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from telegen.index.header import Buffer, Section, pack, unpack

RSP, RBP, PLT, OUTERMOST, UNSUPPORTED, NONE = 0, 1, 2, 3, 4, 5
KIND_NAMES = ("rsp", "rbp", "plt", "outermost", "unsupported", "none")

Rule = tuple[int, int, int, int]
NO_RULE: Rule = (NONE, 0, 0, 0)

KIND, VERSION = b"cfi", 3
_RULE = struct.Struct("<qqqq")     # kind, cfa offset, rbp offset, ra offset
_SEG = struct.Struct("<QQQ")       # vaddr, file offset, file size
MEMO = 4096                        # pc -> rule memoized per table


class IntArray(Protocol):
    """``array('Q'/'I')`` while built, ``memoryview`` cast when read from a file."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int, /) -> int: ...
    def __iter__(self) -> Iterator[int]: ...


class Segment(NamedTuple):
    vaddr: int
    offset: int
    filesz: int


class UnwindTable:
    """Rows of one object file; ``rule(vaddr)`` is the hot-path look-up."""

    __slots__ = ("starts", "indices", "rules", "segments", "build_id", "source", "_memo")

    def __init__(self, starts: IntArray, indices: IntArray, rules: list[Rule],
                 segments: list[Segment], *, build_id: str = "", source: str = "") -> None:
        self.starts = starts
        self.indices = indices
        self.rules = rules
        self.segments = segments
        self.build_id = build_id
        self.source = source           # ".eh_frame", ".debug_frame" or "" (no CFI)
        self._memo: dict[int, Rule] = {}

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def has_cfi(self) -> bool:
        return bool(self.starts)

    def rule(self, vaddr: int) -> Rule:
        hit = self._memo.get(vaddr)
        if hit is not None:
            return hit
        i = bisect_right(self.starts, vaddr) - 1
        rule = self.rules[self.indices[i]] if i >= 0 else NO_RULE
        if len(self._memo) < MEMO:
            self._memo[vaddr] = rule
        return rule

    def load_bias(self, map_start: int, map_offset: int, map_size: int = 1) -> int | None:
        """``address - bias`` = link-time vaddr for a mapping of this file at
        ``map_start`` with file offset ``map_offset``; None if no PT_LOAD covers it.
        A page can belong to two segments (the end of one, the start of the next):
        the segment that overlaps most of the mapping wins."""
        return load_bias(self.segments, map_start, map_offset, map_size)

    # -- serialization ---------------------------------------------------------------
    def to_bytes(self, key: str = "") -> bytes:
        return pack(KIND, VERSION, key, {
            b"segs": Section(_SEG.size, b"".join(_SEG.pack(*g) for g in self.segments)),
            b"rule": Section(_RULE.size, b"".join(_RULE.pack(*r) for r in self.rules)),
            b"strt": Section(8, _native(self.starts, "Q")),
            b"indx": Section(4, _native(self.indices, "I")),
            b"srce": Section(1, self.source.encode()),
        })

    @classmethod
    def from_bytes(cls, data: Buffer, *, key: str | None = None,
                   build_id: str = "") -> UnwindTable:
        """A table over ``data`` (bytes, or the ``mmap`` of a cache file: then
        used in place); ``ValueError`` when it is not a whole, valid table."""
        sections = unpack(data, KIND, VERSION, key)
        try:
            segs, rule_bytes = sections[b"segs"], sections[b"rule"]
            starts, indices = sections[b"strt"].cast("Q"), sections[b"indx"].cast("I")
            source = bytes(sections[b"srce"]).decode()
        except (KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"incomplete unwind table: {exc}") from None
        if len(starts) != len(indices):
            raise ValueError("corrupt unwind table (rows)")
        rules = [_RULE.unpack_from(rule_bytes, i) for i in range(0, len(rule_bytes), _RULE.size)]
        segments = [Segment(*_SEG.unpack_from(segs, i)) for i in range(0, len(segs), _SEG.size)]
        if indices and max(indices) >= len(rules):
            raise ValueError("corrupt unwind table (rule index)")
        return cls(starts, indices, rules, segments, build_id=build_id, source=source)


def _native(values: IntArray, code: str) -> bytes:
    if isinstance(values, (memoryview, array)):
        return values.tobytes()
    return array(code, [values[i] for i in range(len(values))]).tobytes()


class TableBuilder:
    """Collects (start, end, rule) rows and produces a sorted, gap-marked table."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, int, Rule]] = []

    def add(self, start: int, end: int, rule: Rule) -> None:
        if end > start:
            self._rows.append((start, end, rule))

    def build(self, segments: list[Segment], *, build_id: str = "",
              source: str = "") -> UnwindTable:
        self._rows.sort(key=lambda r: r[0])
        interned: dict[Rule, int] = {}
        starts: array[int] = array("Q")
        indices: array[int] = array("I")

        def put(at: int, rule: Rule) -> None:
            idx = interned.setdefault(rule, len(interned))
            if starts and starts[-1] == at:
                indices[-1] = idx
            elif not indices or indices[-1] != idx:
                starts.append(at)
                indices.append(idx)

        end_prev = -1
        for start, end, rule in self._rows:
            if end_prev >= 0 and start > end_prev:
                put(end_prev, NO_RULE)          # gap between FDEs: no CFI
            put(start, rule)
            end_prev = max(end_prev, end)
        if end_prev >= 0:
            put(end_prev, NO_RULE)
        rules = [r for r, _ in sorted(interned.items(), key=lambda kv: kv[1])]
        return UnwindTable(starts, indices, rules, segments, build_id=build_id, source=source)


def load_bias(segments: Iterable[Any], map_start: int, map_offset: int,
              map_size: int = 1) -> int | None:
    """``address - bias`` = link-time vaddr for a mapping at ``map_start`` with
    file offset ``map_offset`` of a file with these PT_LOAD ``segments`` (each
    with ``offset``, ``filesz``, ``vaddr``); None if none covers it. A page can
    belong to two segments (the end of one, the start of the next): the one
    that overlaps most of the mapping wins."""
    best, best_overlap = None, 0
    for seg in segments:   # mappings start at the segment's page, not its offset
        lo, hi = seg.offset & ~0xFFF, seg.offset + max(seg.filesz, 1)
        overlap = min(hi, map_offset + map_size) - max(lo, map_offset)
        if lo <= map_offset < hi and overlap > best_overlap:
            best, best_overlap = seg, overlap
    if best is None:
        return None
    return int(map_start - map_offset + best.offset - best.vaddr)
