"""Unwinding one copied user stack (x86-64) with per-binary unwind tables.

Input: the registers at the sample (ip, sp, bp) and the bytes of the stack
from ``sp`` upwards, as copied by BPF. For each frame the unwinder finds the
rule for its pc (an :class:`AddressSpace` memoizes pc → rule per process, so
a pc seen before costs one dict hit), computes the CFA, and reads the return
address (and the caller's rbp when this frame saved it) from the copy.

Where no CFI covers a pc, frame pointers are used for that frame (``auto``
semantics: CFI where it exists, frame pointers where it does not); a stack
that needed that fallback is reported truncated, because nothing proves it
complete. With ``frame_pointers=False`` (``dwarf``) such a frame ends the
stack instead. A stack is *full* when it reaches a frame whose CFI marks the return
address undefined (``_start``, ``clone3``/``start_thread``), as the C
runtime does for the outermost frame of every thread.

Go code has no CFI: where a mapping is a Go binary (``go_for``), its
``pclntab`` SP deltas give each Go frame's rule, and Go's outermost
functions (``runtime.goexit``, ``mstart``, ``rt0_go``) make a stack full
(:mod:`telegen.unwind.golang`). A sample on Go's system stack (g0: the
scheduler, ``systemstack``, cgo's C code) continues at a stack switch on the
goroutine's stack when BPF copied it (``goroutine``: the registers saved in
``g.sched`` and the bytes from that sp).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import NamedTuple

from telegen.pdata import Mapping
from telegen.unwind.golang import GO_FAKE, GO_MCALL, GO_TOP, GoUnwindInfo
from telegen.unwind.table import NONE, OUTERMOST, PLT, RBP, RSP, Rule, UnwindTable

_U64 = struct.Struct("<Q")
_FP_RULE: Rule = (RBP, 16, -16, -8)     # push rbp; mov rbp, rsp
MAX_DEPTH = 127

# Why a stack stopped early (the ``reason`` of a truncated result).
STACK_END = "stack_end"        # the next slot is outside the copied bytes
UNMAPPED = "unmapped"          # pc outside every executable mapping (JIT, garbage)
UNSUPPORTED = "unsupported"    # CFI the unwinder does not evaluate (signal frame, DRAP)
NO_CFI = "no_cfi"              # frame pointers had to stand in for missing CFI
BAD_FRAME = "bad_frame"        # CFA not above sp: a corrupt or misread frame
DEPTH = "depth"
GO_STACK_SWITCH = "go_stack_switch"   # Go switched stacks here and the other was not copied

MEMO_PER_PROCESS = 16384     # pc -> rule answers kept per address space


class SwitchContext(NamedTuple):
    """The goroutine a system-stack (g0) sample runs for: its saved registers
    (``g.sched`` pc, sp, bp) and the bytes of its stack from ``sp``."""
    pc: int
    sp: int
    bp: int
    stack: bytes


class UnwindResult(NamedTuple):
    addresses: tuple[int, ...]     # leaf ip first, then return addresses
    complete: bool
    reason: str                    # "" when complete


class AddressSpace:
    """The executable mappings of one process with their tables and load biases.

    ``table_for(mapping)`` returns the mapping's table (or None when its file
    cannot be read: such frames fall back to frame pointers); ``go_for``, the
    Go unwind info of a Go binary's mapping (None for other files), used
    for Go code (its pclntab agrees with .debug_frame where both exist, and
    knows the runtime's special frames); the table for the rest (cgo's C)."""

    def __init__(self, mappings: Sequence[Mapping],
                 table_for: Callable[[Mapping], UnwindTable | None],
                 go_for: Callable[[Mapping], GoUnwindInfo | None] | None = None) -> None:
        self._starts: list[int] = []
        self._entries: list[tuple[int, UnwindTable | None, int, GoUnwindInfo | None, int]] = []
        for m in sorted(mappings, key=lambda m: m.start):
            table = table_for(m)
            bias = table.load_bias(m.start, m.offset, m.limit - m.start) \
                if table is not None else None
            if bias is None:
                table, bias = None, 0
            go = go_for(m) if go_for is not None else None
            go_bias = go.load_bias(m.start, m.offset, m.limit - m.start) \
                if go is not None else None
            if go_bias is None:
                go, go_bias = None, 0
            self._starts.append(m.start)
            self._entries.append((m.limit, table, bias, go, go_bias))
        self._memo: dict[int, Rule | None] = {}

    def rule_at(self, address: int) -> Rule | None:
        """The rule for ``address``; None when no executable mapping holds it."""
        memo = self._memo
        if address in memo:
            return memo[address]
        i = bisect_right(self._starts, address) - 1
        rule: Rule | None = None
        if i >= 0:
            limit, table, bias, go, go_bias = self._entries[i]
            if address < limit:
                rule = table.rule(address - bias) if table is not None else \
                    (NONE, 0, 0, 0)
                if go is not None:      # Go code: its own tables (and special frames)
                    rule = go.rule(address - go_bias) or rule
        if len(memo) < MEMO_PER_PROCESS:
            memo[address] = rule
        return rule


def unwind(space: AddressSpace, ip: int, sp: int, bp: int, stack: bytes, *,
           max_depth: int = MAX_DEPTH, frame_pointers: bool = True,
           goroutine: SwitchContext | None = None) -> UnwindResult:
    """Walk ``stack`` (bytes copied from address ``sp``) from the registers;
    at a Go stack switch, go on with ``goroutine`` (once)."""
    base, size = sp, len(stack) - 8
    unpack = _U64.unpack_from
    out = [ip]
    pc, lookup = ip, ip
    used_fp = False
    while len(out) < max_depth:
        rule = space.rule_at(lookup)
        if rule is None:
            return UnwindResult(tuple(out), False, UNMAPPED)
        kind, cfa_off, rbp_off, ra_off = rule
        if kind >= GO_TOP:
            if kind == GO_TOP:
                return UnwindResult(tuple(out), not used_fp, NO_CFI if used_fp else "")
            if kind == GO_FAKE:
                kind = RSP
            elif goroutine is not None and goroutine.sp:
                # the caller is on the goroutine's stack: continue at g.sched
                base, size = goroutine.sp, len(goroutine.stack) - 8
                stack, sp, bp, pc = goroutine.stack, goroutine.sp, goroutine.bp, goroutine.pc
                goroutine = None
                resumed = space.rule_at(pc)
                if resumed is not None and resumed[0] == GO_FAKE:
                    lookup = pc         # systemstack_switch: a marker, not shown
                else:                   # mcall, morestack: a return address in the caller
                    out.append(pc)
                    lookup = pc - 1
                continue
            elif len(out) == 1:
                kind = RSP        # sampled inside the switch function, still on its stack
            elif kind == GO_MCALL:    # a parked goroutine: nothing above
                return UnwindResult(tuple(out), not used_fp, NO_CFI if used_fp else "")
            else:
                return UnwindResult(tuple(out), False, GO_STACK_SWITCH)
        if kind == RSP:
            cfa = sp + cfa_off
        elif kind == RBP:
            cfa = bp + cfa_off
        elif kind == OUTERMOST:
            return UnwindResult(tuple(out), not used_fp, NO_CFI if used_fp else "")
        elif kind == PLT:
            cfa = sp + (16 if (pc & 15) >= cfa_off else 8)
        elif kind == NONE:
            used_fp = True
            if bp == 0 or not frame_pointers:
                return UnwindResult(tuple(out), False, NO_CFI)
            kind, cfa_off, rbp_off, ra_off = _FP_RULE
            cfa = bp + cfa_off
        else:
            return UnwindResult(tuple(out), False, UNSUPPORTED)
        if cfa <= sp:
            return UnwindResult(tuple(out), False, NO_CFI if used_fp else BAD_FRAME)
        at = cfa + ra_off - base
        if at < 0 or at > size:
            return UnwindResult(tuple(out), False, NO_CFI if used_fp else STACK_END)
        ra = unpack(stack, at)[0]
        if rbp_off:
            at = cfa + rbp_off - base
            if at < 0 or at > size:
                return UnwindResult(tuple(out), False, NO_CFI if used_fp else STACK_END)
            bp = unpack(stack, at)[0]
        sp = cfa
        if ra == 0:     # a zeroed return slot: the runtime's end-of-stack marker
            return UnwindResult(tuple(out), not used_fp, NO_CFI if used_fp else "")
        pc, lookup = ra, ra - 1
        if kind == RSP and (ra_rule := space.rule_at(ra)) is not None and \
                ra_rule[0] == GO_FAKE:
            lookup = ra     # systemstack_switch's entry, pushed by cgocallback: not shown
            continue
        out.append(ra)
    return UnwindResult(tuple(out), False, DEPTH)
