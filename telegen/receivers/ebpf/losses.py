"""What the kernel side could not keep, made visible in each profile.

Two kinds (bpf/telegen.h, lock.bpf.c, offcpu.bpf.c, memory.bpf.c):

* spilled: a counts map was full, so the sample was added to its
  thread's entry in ``spill{0,1}`` (no stack; the process's, tid 0, when the
  spill map has no room for the thread). The time/bytes stay in the profile,
  under one ``[stack not kept: counts map full]`` frame per thread.
* lost: what no map could take, or a start/end pair that could not be made
  (a start record that did not fit, a start replaced before its end came).
  Counted as ``ebpf_lost_events{reason, profile}`` and noted in the profile's
  comments, with the time or bytes when they are known.
"""

from __future__ import annotations

from typing import Any

from telegen.pdata import Frame, FrameKind, Line, Profile
from telegen.receivers.ebpf.keys import KEY_SPILLED, RawKey, raw_key
from telegen.telemetry import ComponentTelemetry

SPILL_CPU, SPILL_OFFCPU, SPILL_LOCK, SPILL_MEM = 0, 1, 2, 3
SPILL_KINDS = {"cpu": SPILL_CPU, "off_cpu": SPILL_OFFCPU, "mutex": SPILL_LOCK,
               "alloc": SPILL_MEM}
SPILLED = Frame(FrameKind.TRUNCATED, 0, None, (Line("[stack not kept: counts map full]"),))
# window.py stat names of what the spill maps could not take, per profile
LOST_STATS = {"cpu": "lost_cpu", "off_cpu": "lost_offcpu", "mutex": "lost_lock",
              "alloc": "lost_mem"}

Spilled = dict[int, list[tuple[RawKey, int, int, int]]]   # kind -> (key, count, value, extra)


def read_spill(rows: list[tuple[Any, Any]]) -> Spilled:
    """Drained ``spillN`` entries by SPILL_* kind."""
    out: Spilled = {}
    for k, v in rows:
        key = raw_key(k)
        if not key.flags & KEY_SPILLED:
            continue
        out.setdefault(key.flags >> 8, []).append(
            (key, int(v.count), int(v.value), int(v.extra)))
    return out


class Losses:
    def __init__(self, telemetry: ComponentTelemetry) -> None:
        self._t = telemetry

    def lost(self, profile: Profile | None, name: str, reason: str, n: int,
             what: str, value: str = "") -> None:
        """Count ``n`` lost ``what`` (e.g. "waits") for ``reason``; note them in ``profile``."""
        if n <= 0:
            return
        self._t.counter("ebpf_lost_events", reason=reason, profile=name).add(n)
        if profile is not None:
            extra = f" ({value})" if value else ""
            profile.comments.append(f"lost: {n} {what}{extra}: {REASONS[reason]}")

    def spilled(self, profile: Profile, name: str, spilled: Spilled, stats: dict[str, int],
                labels: Any, wanted: Any, values: Any) -> None:
        """Add ``name``'s spilled samples to ``profile`` (``values(count, value,
        extra)`` gives the sample's values) and note what even the spill lost."""
        kept = 0
        for key, count, value, extra in spilled.get(SPILL_KINDS[name], ()):
            if not wanted(key.pid):
                continue
            profile.add((SPILLED,), values(count, value, extra), labels(key))
            kept += count
        if kept:
            profile.comments.append(f"{kept} samples kept without stack: "
                                    "counts map full (raise max_stacks or shorten duration)")
        stat = LOST_STATS[name]
        lost = stats.get(stat, 0)
        unit = {"cpu": "", "alloc": " bytes"}.get(name, " ns")
        amount = stats.get(f"{stat}_value", 0)
        self.lost(profile, name, "spill_full", lost, "samples",
                  f"{amount}{unit}" if amount else "")


REASONS = {
    "spill_full": "counts map and spill map full",
    "starts_full": "start record did not fit (map of pending starts full)",
    "unpaired": "a start whose end never came (replaced by the thread's next start) "
                "or an end that was not its start's",
    "event_ring_full": "event ring full",
}
