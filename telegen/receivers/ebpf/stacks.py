"""Turning a sample's stack ids into addresses: the unwinder slot.

The BPF programs store each sample's stacks in the stack map of the window
generation it was taken in (``key.stack_seq``). ``FramePointerStacks`` reads
frame-pointer stacks walked by the kernel (``bpf_get_stackid``). A CFI/DWARF
unwinder slots in by implementing :class:`StackSource` over its own store
(e.g. user stack bytes copied by BPF and unwound in user space): the window
reader and the frame builder only ever ask ``addresses(seq, stack_id)``.

Off-CPU intervals are charged when a thread is switched back in, possibly
windows after its stack was captured. Before a generation's stack map is
cleared, the stacks still referenced by blocked threads (pending off-CPU
records) or by entries already counted in the next window are copied into
``carry`` so those intervals still resolve.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

StackRef = tuple[int, int]   # (stack_seq, stack_id)
OVERFLOW_BIT = 1 << 30       # id lives in the generation's overflow map (bpf/telegen.h)
# Last "address" of a stack that stopped early (an unwinder could not reach
# the outermost frame): the frame builder turns it into a [truncated] frame.
TRUNCATED_MARK = 0


class StackSource(Protocol):
    name: str

    def begin(self, seq: int) -> None:
        """Window ``seq`` is being read (its generation is no longer written)."""

    def addresses(self, seq: int, stack_id: int) -> tuple[int, ...] | None:
        """Addresses leaf first; None when the stack is unknown (expired, collided)."""

    def end(self, seq: int, still_needed: set[StackRef]) -> None:
        """Window ``seq`` is done: keep what ``still_needed`` references, clear the rest."""


class FramePointerStacks:
    name = "frame_pointer"

    def __init__(self, stack_maps: tuple[Any, Any], overflow_maps: tuple[Any, Any]) -> None:
        self._maps = stack_maps
        self._overflow = overflow_maps
        self._seq = -1
        self._current: dict[int, tuple[int, ...] | None] = {}
        self._carry: dict[StackRef, tuple[int, ...]] = {}

    def begin(self, seq: int) -> None:
        self._seq = seq
        self._current = {}

    def addresses(self, seq: int, stack_id: int) -> tuple[int, ...] | None:
        if stack_id < 0:
            return None
        if seq == self._seq:
            if stack_id not in self._current:
                self._current[stack_id] = self._lookup(seq, stack_id)
            return self._current[stack_id]
        return self._carry.get((seq, stack_id))

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

    def end(self, seq: int, still_needed: set[StackRef]) -> None:
        carry: dict[StackRef, tuple[int, ...]] = {}
        for ref in still_needed:
            s, stack_id = ref
            if s == seq:
                addrs = self.addresses(s, stack_id)
            else:
                addrs = self._carry.get(ref)
            if addrs is not None:
                carry[ref] = addrs
        self._carry = carry
        self._current = {}
        for table in (self._maps[seq & 1], self._overflow[seq & 1]):
            try:
                table.clear()
            except Exception:   # never crash the window loop on a map error
                log.exception("clearing stack map of window %d failed", seq)

    @property
    def carried(self) -> int:
        return len(self._carry)
