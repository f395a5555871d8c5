"""Cumulative → delta: turn profiles that count since process start (Go's
mutex, block and allocs) into per-window deltas.

For each series (a hashable key, e.g. ``(target, profile name)``) the previous
cumulative profile is kept as ``(stack, labels, link) -> values``. Then:

* **First sight** of a series: nothing is emitted; the profile is the baseline
  (what it holds happened before we looked, over an unknown time).
* **Same process**: delta = current − previous per sample; samples whose
  delta is all zero are left out. A single value that went down (sampling
  rescale can do that) is clamped to 0 and counted, never emitted negative.
* **Restart** — the caller's ``identity`` (e.g. pid + start time) changed, or
  a value column's total fell by more than ``drop_ratio`` (a new process
  starts again from zero): everything in the current profile happened after
  the previous scrape, so the whole current profile is the delta. When the
  caller knows the new process's start time and it is *before* the previous
  scrape, the process was not the one we saw before but not new either, so
  the current profile becomes a baseline and nothing is emitted.

Values are therefore never negative and never counted twice.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from telegen.pdata import Frame, Labels, Profile, Sample, SpanLink

SampleKey = tuple[tuple[Frame, ...], Labels, SpanLink | None]


class DeltaOutcome(StrEnum):
    BASELINE = "baseline"   # first sight (or restart of unknown age): nothing emitted
    DELTA = "delta"         # current − previous
    RESET = "reset"         # restart detected: the whole current profile


@dataclass
class _Previous:
    values: dict[SampleKey, list[int]]
    totals: list[int]
    identity: Hashable | None
    time_ns: int


class CumulativeDelta:
    """Thread-safe store of previous cumulative profiles, one per series."""

    def __init__(self, *, drop_ratio: float = 0.01) -> None:
        self._drop_ratio = drop_ratio
        self._previous: dict[Hashable, _Previous] = {}
        self._lock = threading.Lock()
        self.clamped_values = 0          # per-sample decreases clamped to 0
        self.resets = 0

    def delta(self, series: Hashable, current: Profile, *, now_ns: int,
              identity: Hashable | None = None,
              started_ns: int = 0) -> tuple[Profile | None, DeltaOutcome]:
        """The delta profile for ``current`` (None when nothing is emitted).

        ``now_ns`` is when ``current`` was taken; the delta covers
        ``[previous now_ns, now_ns]``. ``identity`` names the process behind
        the series when known; ``started_ns`` is its start time (0: unknown).
        """
        values = {s.key: list(s.values) for s in current}
        totals = _totals(values.values(), len(current.sample_types))
        new = _Previous(values, totals, identity, now_ns)
        with self._lock:
            prev = self._previous.get(series)
            self._previous[series] = new
        if prev is None or len(prev.totals) != len(totals):
            return None, DeltaOutcome.BASELINE
        if self._restarted(prev, new):
            self.resets += 1
            if started_ns and started_ns < prev.time_ns:
                return None, DeltaOutcome.BASELINE
            out = self._build(current, ((k, v) for k, v in values.items()), prev.time_ns, now_ns)
            return out, DeltaOutcome.RESET
        diffs: list[tuple[SampleKey, list[int]]] = []
        for key, vals in values.items():
            before = prev.values.get(key)
            if before is None:
                diffs.append((key, vals))
                continue
            d = [a - b for a, b in zip(vals, before, strict=True)]
            if any(x < 0 for x in d):
                self.clamped_values += sum(1 for x in d if x < 0)
                d = [max(0, x) for x in d]
            diffs.append((key, d))
        return self._build(current, diffs, prev.time_ns, now_ns), DeltaOutcome.DELTA

    def _restarted(self, prev: _Previous, new: _Previous) -> bool:
        if prev.identity is not None and new.identity is not None \
                and prev.identity != new.identity:
            return True
        return any(now < before - max(1.0, before * self._drop_ratio)
                   for before, now in zip(prev.totals, new.totals, strict=True))

    @staticmethod
    def _build(current: Profile, diffs: Iterable[tuple[SampleKey, list[int]]],
               start_ns: int, end_ns: int) -> Profile:
        out = Profile(name=current.name, sample_types=current.sample_types,
                      period_type=current.period_type, period=current.period,
                      start_ns=start_ns, duration_ns=max(0, end_ns - start_ns),
                      resource=current.resource,
                      default_sample_type=current.default_sample_type,
                      comments=current.comments)
        by_key = {s.key: s for s in current}
        for key, vals in diffs:
            if not any(vals):
                continue
            s = by_key[key]
            out.add_sample(Sample(s.stack, [max(0, v) for v in vals], s.labels, [], s.link))
        return out

    def forget(self, series: Hashable) -> None:
        with self._lock:
            self._previous.pop(series, None)

    def retain(self, keep: Iterable[Hashable]) -> int:
        """Drop every series not in ``keep`` (targets that went away); returns how many."""
        wanted = set(keep)
        with self._lock:
            gone = [s for s in self._previous if s not in wanted]
            for s in gone:
                del self._previous[s]
        return len(gone)

    def series(self) -> list[Hashable]:
        with self._lock:
            return list(self._previous)


def _totals(values: Iterable[list[int]], width: int) -> list[int]:
    sums = [0] * width
    for vals in values:
        for i, v in enumerate(vals):
            sums[i] += v
    return sums
