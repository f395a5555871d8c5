"""The ``mutex`` profile (lock contention) from bpf/lock.bpf.c.

Every futex(FUTEX_WAIT family) of a profiled process is timed in the
kernel; waits of at least ``mutex_threshold`` are counted per stack
(contentions, delay ns) per window, shorter ones only counted. Futex waits
are what pthread mutexes, rwlocks, condition variables, semaphores and
``pthread_join`` block in, so idle threads waiting on a condition variable
show up too: read the stacks.
"""

from __future__ import annotations

from typing import Any

from telegen.pdata import MUTEX, Profile, ValueType
from telegen.receivers.ebpf.keys import raw_key
from telegen.receivers.ebpf.losses import Losses
from telegen.receivers.ebpf.profiles import ProfileBuilder
from telegen.receivers.ebpf.stats import StatDeltas
from telegen.receivers.ebpf.window import WindowData, drain
from telegen.telemetry import ComponentTelemetry

STAT_NAMES = ("waits", "below", "below_ns", "starts_full", "counts_full", "unpaired")


class LockProfiles:
    name = "mutex"

    def __init__(self, *, bpf: Any, builder: ProfileBuilder, threshold_ns: int,
                 telemetry: ComponentTelemetry) -> None:
        self._bpf = bpf
        self._builder = builder
        self.threshold_ns = threshold_ns
        self._t = telemetry
        self._stats = StatDeltas(lambda: self._bpf[b"lock_stats"], STAT_NAMES)
        self._losses = Losses(telemetry)

    def profile(self, w: WindowData) -> Profile:
        """This window's profile; call between MapReader.read and finish."""
        stats = self.stats_delta()
        p = Profile(name="mutex", sample_types=MUTEX,
                    period_type=ValueType("contentions", "count"), period=1,
                    start_ns=w.start_ns, duration_ns=w.end_ns - w.start_ns,
                    resource=self._builder.resource, default_sample_type="delay")
        for k, v in drain(self._bpf[f"lock_counts{w.seq & 1}".encode()]):
            key = raw_key(k)
            if not self._builder.wanted(key.pid):
                continue
            count = int(v.count)
            p.add(self._builder.frames(key, count), [count, int(v.ns)],
                  self._builder.labels(key))
        self._losses.spilled(p, "mutex", w.spilled, w.stats, self._builder.labels,
                             self._builder.wanted, lambda n, ns, _e: [n, ns])
        self._losses.lost(p, "mutex", "starts_full", stats["starts_full"], "futex waits")
        self._losses.lost(p, "mutex", "unpaired", stats["unpaired"], "futex waits")
        if stats["below"]:
            p.comments.append(
                f"mutex_threshold {self.threshold_ns / 1e3:g}us: {stats['below']} shorter "
                f"futex waits ({stats['below_ns'] / 1e6:.1f}ms in all) not shown")
        return p

    def stats_delta(self) -> dict[str, int]:
        delta = self._stats.delta()
        self._t.counter("ebpf_futex_waits").add(delta["waits"])
        self._t.counter("ebpf_mutex_below_threshold").add(delta["below"])
        for stat, map_name in (("starts_full", "lock_starts"), ("counts_full", "lock_counts")):
            if delta[stat]:
                self._t.counter("ebpf_map_full", map=map_name).add(delta[stat])
        return delta
