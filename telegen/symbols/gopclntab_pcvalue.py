"""Go pc-value tables (``pcfile``, ``pcln``, ``pcdata``), decoded lazily.

A table is a run of varint pairs — zig-zag value delta, then pc delta in
units of the instruction quantum — starting from value -1 at the function's
entry; a zero value delta after the first pair ends it. A
:class:`PcValueTable` decodes only as far as the pcs asked for, a chunk of
bytes at a time, and resumes where it stopped for a later, higher pc; it
stops at the function's end, at the table's end, or refuses
(``bad_gopclntab``) past ``MAX_TABLE_STEPS`` pairs, past the ``pctab``
region, or on a varint longer than 32 bits.
"""

from __future__ import annotations

import mmap
from array import array
from bisect import bisect_right

from telegen.untrusted import Refused

MAX_TABLE_STEPS = 1 << 17     # pc-value pairs decoded for one table, and at most
STEPS_PER_QUANTUM = 2         # this many per instruction unit of the function (+64)
FIRST_CHUNK, MAX_CHUNK = 16, 256    # bytes decoded between checks of the target pc


class PcValueTable:
    """One function's table: ``ends[i]`` is the first pc past the range
    whose value is ``values[i]``."""

    __slots__ = ("ends", "values", "_pos", "_limit", "_pc", "_value", "_end", "_quantum",
                 "_partial", "_shift", "_is_value", "_done", "_max_steps")

    def __init__(self, start: int, limit: int, entry: int, end: int, quantum: int) -> None:
        self.ends = array("q")       # 8 bytes an entry, no int objects kept
        self.values = array("q")
        self._pos, self._limit = start, limit
        self._pc, self._value, self._end, self._quantum = entry, -1, end, quantum
        self._partial = self._shift = 0
        self._is_value = True
        self._done = False
        self._max_steps = min(MAX_TABLE_STEPS, STEPS_PER_QUANTUM * (end - entry) // quantum + 64)

    def value_at(self, data: mmap.mmap, pc: int) -> int:
        """The value at ``pc`` (-1 when the table does not cover it)."""
        ends = self.ends
        if not self._done and (not ends or ends[-1] <= pc):
            self._decode_past(data, pc)
        i = bisect_right(ends, pc)
        return self.values[i] if i < len(self.values) else -1

    def _decode_past(self, data: mmap.mmap, target: int) -> None:
        ends, values = self.ends, self.values
        pc, value, quantum, end = self._pc, self._value, self._quantum, self._end
        v, shift, is_value = self._partial, self._shift, self._is_value
        pos, size = self._pos, FIRST_CHUNK
        while not ends or ends[-1] <= target:
            if pos >= self._limit:
                raise Refused("bad_gopclntab", "a pc-value table runs off pctab")
            if len(ends) > self._max_steps:
                raise Refused("bad_gopclntab", f"a pc-value table over {self._max_steps} steps")
            chunk = data[pos:min(pos + size, self._limit)]
            pos += len(chunk)
            size = min(2 * size, MAX_CHUNK)
            for b in chunk:
                if b & 0x80:
                    v |= (b & 0x7F) << shift
                    shift += 7
                    if shift > 28:
                        raise Refused("bad_gopclntab", "a varint over 32 bits in a pc-value table")
                    continue
                v |= b << shift
                shift = 0
                if is_value:
                    if v == 0 and ends:
                        self._done = True
                        return
                    value += -((v >> 1) + 1) if v & 1 else v >> 1
                else:
                    pc += v * quantum
                    ends.append(pc)
                    values.append(value)
                    if pc >= end:
                        self._done = True
                        return
                v = 0
                is_value = not is_value
        self._pc, self._value, self._pos = pc, value, pos
        self._partial, self._shift, self._is_value = v, shift, is_value

    def __len__(self) -> int:
        return len(self.ends)
