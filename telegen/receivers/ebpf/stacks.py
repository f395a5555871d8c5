"""Turning a sample's stack ids into addresses: the unwinder slot.

The BPF programs store each sample's stacks in the stack map of the window
generation it was taken in (``key.stack_seq``). ``FramePointerStacks`` reads
frame-pointer stacks walked by the kernel (``bpf_get_stackid``). A CFI/DWARF
unwinder slots in by implementing :class:`StackSource` over its own store
(e.g. user stack bytes copied by BPF and unwound in user space): the window
reader and the frame builder only ever ask ``addresses(seq, stack_id)``.

Stack ids stay in their map across windows: the kernel gives the same stack
the same id (its hash bucket) and never overwrites a bucket (no
``BPF_F_REUSE_STACKID``), so an id's addresses are read once and kept while
it is used (:data:`KEEP_WINDOWS` windows of its generation). Each generation
is swept when its window is done: ids nobody read —
most are switch-outs shorter than ``off_cpu_threshold``, thousands per window
on a busy host — and ids unused for :data:`KEEP_WINDOWS` windows are deleted,
except those still referenced by blocked threads (pending off-CPU records),
entries already counted in the next window or live allocations
(``still_needed``), so a later reference to an id never finds another stack
in its bucket. Swept less often, those unread ids filled a quarter of the map
and pushed one new stack in ten into the overflow map (measured).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

StackRef = tuple[int, int]   # (stack_seq, stack_id)
OVERFLOW_BIT = 1 << 30       # id lives in the generation's overflow map (bpf/telegen.h)
# Last "address" of a stack that stopped early (an unwinder could not reach
# the outermost frame): the frame builder turns it into a [truncated] frame.
TRUNCATED_MARK = 0


KEEP_WINDOWS = 3     # windows of a generation an unused id is kept

NeededRefs = Callable[[], set[StackRef]]


class StackSource(Protocol):
    name: str

    def begin(self, seq: int) -> None:
        """Window ``seq`` is being read (its generation is no longer written)."""

    def addresses(self, seq: int, stack_id: int) -> tuple[int, ...] | None:
        """Addresses leaf first; None when the stack is unknown (expired, collided)."""

    def end(self, seq: int, still_needed: NeededRefs) -> None:
        """Window ``seq`` is done: what ``still_needed()`` references must stay
        readable; the rest may go."""


class FramePointerStacks:
    name = "frame_pointer"

    def __init__(self, stack_maps: tuple[Any, Any], overflow_maps: tuple[Any, Any]) -> None:
        self._maps = stack_maps
        self._overflow = overflow_maps
        self._seq = -1
        # per generation: stack id -> [addresses, last window it was used in]
        self._known: tuple[dict[int, list[Any]], dict[int, list[Any]]] = ({}, {})
        self.deleted = 0      # ids deleted from the maps by sweeps

    def begin(self, seq: int) -> None:
        self._seq = seq

    def addresses(self, seq: int, stack_id: int) -> tuple[int, ...] | None:
        if stack_id < 0:
            return None
        known = self._known[seq & 1]
        hit = known.get(stack_id)
        if hit is None:
            addrs = self._lookup(seq, stack_id)
            if addrs is None:
                return None
            hit = known[stack_id] = [addrs, self._seq]
        else:
            hit[1] = max(hit[1], self._seq)
        return hit[0]  # type: ignore[no-any-return]

    def _lookup(self, seq: int, stack_id: int) -> tuple[int, ...] | None:
        table = self._maps[seq & 1]
        if stack_id & OVERFLOW_BIT:
            table, stack_id = self._overflow[seq & 1], stack_id & ~OVERFLOW_BIT
        try:
            value = table[table.Key(stack_id)]
        except KeyError:
            return None
        ips = value.ip
        out = []
        for ip in ips:
            if not ip:
                break
            out.append(int(ip))
        return tuple(out)

    def end(self, seq: int, still_needed: NeededRefs) -> None:
        g = seq & 1
        known = self._known[g]
        try:
            needed = {sid for s, sid in still_needed() if s & 1 == g}
            for table, bit in ((self._maps[g], 0), (self._overflow[g], OVERFLOW_BIT)):
                self._sweep(table, bit, known, needed, seq - 2 * KEEP_WINDOWS)
        except Exception:   # never crash the window loop on a map error
            log.exception("sweeping the stack maps of window %d failed", seq)

    def _sweep(self, table: Any, bit: int, known: dict[int, list[Any]], needed: set[int],
               cutoff: int) -> None:
        for k in table.keys():
            sid = int(getattr(k, "value", k)) | bit
            hit = known.get(sid)
            if sid in needed or (hit is not None and hit[1] > cutoff):
                continue
            try:
                del table[k]
            except KeyError:
                pass
            known.pop(sid, None)
            self.deleted += 1

    @property
    def kept(self) -> int:
        """Stack ids whose addresses are held (both generations)."""
        return len(self._known[0]) + len(self._known[1])
