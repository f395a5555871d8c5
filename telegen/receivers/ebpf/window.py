"""Reading one closed window out of the kernel.

User space flips the sequence number in ``control[0]``; programs then write
to the other generation's counts and stack maps. After a short grace period
(BPF programs run for microseconds), the closed generation is read and
cleared without racing the programs.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telegen.receivers.ebpf.bpf_loader import STACK_DEPTH, LoadedBpf
from telegen.receivers.ebpf.keys import RawKey, raw_key
from telegen.receivers.ebpf.losses import Spilled, read_spill
from telegen.receivers.ebpf.stacks import StackRef, StackSource
from telegen.receivers.ebpf.stats import StatDeltas

log = logging.getLogger(__name__)

GRACE_S = 0.01
STAT_NAMES = (
    "cpu_samples", "offcpu_events",
    "ustack_efault", "ustack_eexist", "ustack_enomem", "ustack_other",
    "kstack_efault", "kstack_eexist", "kstack_enomem", "kstack_other",
    "counts_full", "starts_full", "events_lost", "seen_full",
    "offcpu_below_threshold", "offcpu_below_ns",
    "usnap_emitted", "usnap_deduped", "usnap_throttled", "usnap_lost", "usnap_fault",
    "offcpu_unpaired", "spilled",
    "lost_cpu", "lost_cpu_value", "lost_offcpu", "lost_offcpu_value",
    "lost_lock", "lost_lock_value", "lost_mem", "lost_mem_value", "usnap_skipped",
)


@dataclass
class WindowData:
    seq: int
    start_ns: int
    end_ns: int
    cpu: list[tuple[RawKey, int]] = field(default_factory=list)            # samples
    off_cpu: list[tuple[RawKey, int, int]] = field(default_factory=list)   # ns, intervals
    stats: dict[str, int] = field(default_factory=dict)                    # deltas
    spilled: Spilled = field(default_factory=dict)     # counts maps full: per thread


def drain(table: Any) -> list[tuple[Any, Any]]:
    """All entries of an inactive map, deleted as they are read."""
    try:
        return [(k, v) for k, v in table.items_lookup_and_delete_batch()]
    except Exception:   # kernels/maps without batch ops
        items = list(table.items())
        for k, _ in items:
            try:
                del table[k]
            except KeyError:
                pass
        return items


def _int(v: Any) -> int:
    return int(v.value) if hasattr(v, "value") else int(v)


class MapReader:
    def __init__(self, loaded: LoadedBpf, stacks: StackSource, *, cpu: bool,
                 off_cpu: bool) -> None:
        self._bpf = loaded
        self._stacks = stacks
        self._cpu = cpu
        self._off = off_cpu
        self.seq = 0
        self._stats = StatDeltas(lambda: loaded.table("stats"), STAT_NAMES)
        self._window_start = time.time_ns()
        # Other users of stack ids that outlive a window (memory inuse: live
        # allocations): given the closed seq, the refs to keep.
        self.keep_stacks: list[Callable[[int], set[StackRef]]] = []

    def flip(self) -> tuple[int, int, int]:
        """Close the current window; returns (closed seq, its start, its end) in unix ns."""
        closed = self.seq
        self.seq += 1
        self._bpf.set_seq(self.seq)
        end = time.time_ns()
        start, self._window_start = self._window_start, end
        time.sleep(GRACE_S)
        return closed, start, end

    def read(self, closed: int, start_ns: int, end_ns: int) -> WindowData:
        data = WindowData(closed, start_ns, end_ns)
        g = closed & 1
        self._stacks.begin(closed)
        if self._cpu:
            for k, v in drain(self._bpf.table(f"cpu_counts{g}")):
                data.cpu.append((raw_key(k), _int(v)))
        if self._off:
            for k, v in drain(self._bpf.table(f"off_counts{g}")):
                data.off_cpu.append((raw_key(k), int(v.ns), int(v.count)))
        data.spilled = read_spill(drain(self._bpf.table(f"spill{g}")))
        data.stats = self.stats_delta()
        return data

    def finish(self, closed: int) -> None:
        """Let the stack source drop what no pending record needs (the scan of
        every blocked thread's record runs only if the source asks)."""
        self._stacks.end(closed, lambda: self._still_needed(closed))

    def _still_needed(self, closed: int) -> set[StackRef]:
        needed: set[StackRef] = set()
        for extra in self.keep_stacks:
            try:
                needed |= extra(closed)
            except Exception:
                log.exception("collecting stacks to keep failed")
        if not self._off:
            return needed
        keys: list[Any] = []
        try:
            keys.extend(v.key for _, v in self._bpf.table("off_starts").items())
            keys.extend(self._bpf.table(f"off_counts{self.seq & 1}").keys())
        except Exception:
            log.exception("scanning pending off-CPU records failed")
        for k in keys:
            seq = int(k.stack_seq)
            if seq == closed or (seq - closed) & 0xFFFFFFFF > 0x7FFFFFFF:   # closed or older
                for sid in (int(k.user_stack), int(k.kernel_stack)):
                    if sid >= 0:
                        needed.add((seq, sid))
        return needed

    def stats_delta(self) -> dict[str, int]:
        return self._stats.delta()

    def user_stack(self, key: RawKey) -> tuple[tuple[int, ...] | None, str]:
        """The user addresses of a sample and, when they are missing, why
        ("" when fine, "none" for kernel threads, "expired", "failed",
        "not_copied" for a preempted thread: bpf/telegen.h walk_stacks_ex)."""
        sid = key.user_stack
        if sid == -errno.EFAULT and not key.user_mode:
            return (), "none"
        if sid == -errno.EAGAIN:
            return None, "not_copied"
        if sid < 0:
            return None, "failed"
        addrs = self._stacks.addresses(key.stack_seq, sid)
        if addrs is None:
            return None, "expired"
        return addrs, ""

    def kernel_stack(self, key: RawKey) -> tuple[int, ...]:
        if key.kernel_stack < 0:
            return ()
        return self._stacks.addresses(key.stack_seq, key.kernel_stack) or ()


__all__ = ["STACK_DEPTH", "MapReader", "WindowData", "drain"]
