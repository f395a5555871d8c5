"""The ``alloc`` / ``inuse`` memory profiles from bpf/memory.bpf.c.

``alloc``: (objects, bytes) per stack counted in the kernel per window, each
sampled allocation weighted by 1/p (see the BPF file). ``inuse``: the live
sampled allocations (``mem_live``) summed at the end of each window; entries
of processes that have exited are dropped. Stack ids of live allocations
outlive their window, so the reader keeps those stacks (``keep_stacks``).

Frames: the leaf is the allocator entry point; a frame-pointer walk from a
function's first instruction skips its immediate caller, so the return
address read at the probe (``caller``) is put back under the leaf unless the
unwinder already has it.
"""

from __future__ import annotations

import math
from typing import Any

from telegen.pdata import ALLOC, INUSE, Frame, FrameKind, Profile, ValueType
from telegen.procinfo import ProcessCache, procfs
from telegen.procinfo.procfs import PROC
from telegen.receivers.ebpf.keys import RawKey, raw_key
from telegen.receivers.ebpf.losses import Losses
from telegen.receivers.ebpf.profiles import ProfileBuilder
from telegen.receivers.ebpf.stacks import StackRef
from telegen.receivers.ebpf.stats import StatDeltas
from telegen.receivers.ebpf.window import MapReader, WindowData, drain
from telegen.telemetry import ComponentTelemetry

FP_ONE = 1 << 16
EXP_TABLE = 1024
WEIGHT_TABLE = 3840          # x in [1, 16) in steps of 1/256 (bpf/memory.bpf.c)
STAT_NAMES = ("calls", "sampled", "live_full", "frees_matched", "counts_full",
              "pending_full", "unpaired")
MemKey = tuple[RawKey, int]  # (sample key, caller return address)


def exp_table(n: int = EXP_TABLE) -> list[int]:
    """Quantiles of Exp(1) in 16.16, mean exactly 1: the BPF draws next gaps from it."""
    q = [-math.log((i + 0.5) / n) for i in range(n)]
    scale = n / sum(q)
    return [max(1, round(v * scale * FP_ONE)) for v in q]


def weight_table(n: int = WEIGHT_TABLE) -> list[int]:
    """1/(1 - exp(-x)) in 16.16 for x = 1 + (i + 0.5)/256."""
    return [round(FP_ONE / (1.0 - math.exp(-(1.0 + (i + 0.5) / 256)))) for i in range(n)]


def weight(size: int, rate: int) -> float:
    """The weight the BPF gives a sampled allocation (the exact 1/p)."""
    if rate <= 0:
        return 1.0
    return 1.0 / (1.0 - math.exp(-size / rate))


def newer(seq: int, than: int) -> bool:
    return 0 < (seq - than) & 0xFFFFFFFF < 0x80000000


def _fill(table: Any, values: list[int]) -> None:
    for i, v in enumerate(values):
        table[table.Key(i)] = table.Leaf(v)


class MemoryProfiles:
    def __init__(self, *, bpf: Any, reader: MapReader, builder: ProfileBuilder,
                 processes: ProcessCache, inuse: bool, sample_every_bytes: int,
                 telemetry: ComponentTelemetry, proc: str = PROC) -> None:
        self._bpf = bpf
        self._builder = builder
        self._procs = processes
        self.inuse = inuse
        self.rate = sample_every_bytes
        self._proc = proc
        self._keep: set[StackRef] = set()
        self._stats = StatDeltas(lambda: self._bpf[b"mem_stats"], STAT_NAMES)
        self._t = telemetry
        self._losses = Losses(telemetry)
        self.dropped_exited = 0
        _fill(bpf[b"mem_exp"], exp_table())
        _fill(bpf[b"mem_weight"], weight_table())
        if inuse:
            reader.keep_stacks.append(lambda closed: self._keep)

    @property
    def name(self) -> str:
        return "inuse" if self.inuse else "alloc"

    def profile(self, w: WindowData) -> Profile:
        """This window's profile; call between MapReader.read and finish."""
        stats = self.stats_delta()
        p = Profile(name=self.name, sample_types=INUSE if self.inuse else ALLOC,
                    period_type=ValueType("space", "bytes"), period=max(self.rate, 1),
                    start_ns=w.start_ns, duration_ns=w.end_ns - w.start_ns,
                    resource=self._builder.resource,
                    default_sample_type="inuse_space" if self.inuse else "alloc_space")
        values = self._live(w.seq) if self.inuse else self._counted(w.seq)
        for (key, caller), (objects_fp, nbytes) in values.items():
            if not self._builder.wanted(key.pid):
                continue
            objects = max(1, round(objects_fp / FP_ONE))
            p.add(self._frames(key, caller, objects), [objects, nbytes],
                  self._builder.labels(key))
        rate = f"sample_every_bytes {self.rate}" if self.rate else "every allocation"
        p.comments.append(f"memory ({rate}): {stats['calls']} allocation calls, "
                          f"{stats['sampled']} sampled")
        if stats["live_full"]:
            p.comments.append(f"{stats['live_full']} sampled allocations not tracked "
                              "(live map full)")
        if self.inuse:
            for reason in ("pending_full", "unpaired"):
                self._losses.lost(p, self.name, reason.replace("pending", "starts"),
                                  stats[reason], "sampled allocations")
        else:
            self._losses.spilled(p, self.name, w.spilled, w.stats, self._builder.labels,
                                 self._builder.wanted,
                                 lambda _n, nbytes, objects_fp: [
                                     max(1, round(objects_fp / FP_ONE)), nbytes])
        return p

    # -- reading ---------------------------------------------------------------------
    def _counted(self, seq: int) -> dict[MemKey, list[int]]:
        out: dict[MemKey, list[int]] = {}
        for k, v in drain(self._bpf[f"mem_counts{seq & 1}".encode()]):
            mk = (raw_key(k.key), int(k.caller))
            acc = out.setdefault(mk, [0, 0])
            acc[0] += int(v.objects_fp)
            acc[1] += int(v.bytes)
        return out

    def _live(self, closed: int) -> dict[MemKey, list[int]]:
        """Live sampled allocations made up to the end of window ``closed``."""
        table = self._bpf[b"mem_live"]
        out: dict[MemKey, list[int]] = {}
        keep: set[StackRef] = set()
        alive: dict[int, bool] = {}
        dead: list[Any] = []
        for ptr, v in table.items():
            key = raw_key(v.key.key)
            if key.pid not in alive:
                alive[key.pid] = procfs.alive(key.pid, self._proc)
            if not alive[key.pid]:
                dead.append(ptr)
                continue
            if newer(key.stack_seq, closed):        # allocated after the window closed
                continue
            for sid in (key.user_stack, key.kernel_stack):
                if sid >= 0:
                    keep.add((key.stack_seq, sid))
            acc = out.setdefault((key, int(v.key.caller)), [0, 0])
            acc[0] += int(v.weight_fp)
            acc[1] += (int(v.size) * int(v.weight_fp)) >> 16
        for ptr in dead:
            try:
                del table[ptr]
            except KeyError:
                pass
        self.dropped_exited += len(dead)
        self._keep = keep
        return out

    def _frames(self, key: RawKey, caller: int, objects: int) -> tuple[Frame, ...]:
        frames = self._builder.frames(key, objects)
        if not caller or not frames or frames[0].kind is not FrameKind.NATIVE:
            return frames
        ret = caller - 1
        if len(frames) > 1 and frames[1].address == ret:
            return frames                              # the unwinder found it already
        frame = Frame(FrameKind.NATIVE, ret, self._procs.find_mapping(key.pid, ret))
        return (frames[0], frame, *frames[1:])

    def stats_delta(self) -> dict[str, int]:
        delta = self._stats.delta()
        self._t.counter("ebpf_memory_calls").add(delta["calls"])
        self._t.counter("ebpf_memory_sampled").add(delta["sampled"])
        for stat, map_name in (("live_full", "memory_live"), ("counts_full", "memory_counts")):
            if delta[stat]:
                self._t.counter("ebpf_map_full", map=map_name).add(delta[stat])
        return delta
