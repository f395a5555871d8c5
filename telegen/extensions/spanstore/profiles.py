"""The samples linked to each span, kept for the per-span view.

One pdata :class:`~telegen.pdata.Profile` per (span, profile type), holding
copies of the linked samples (stack, values, labels, timestamps, link). At
most ``max_spans`` spans (oldest first out) and ``max_samples`` distinct
samples per span and type; what does not fit is counted, never raised.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from telegen.pdata import Profile, Sample, SpanLink


class SpanProfiles:
    def __init__(self, *, max_spans: int, max_samples: int,
                 on_count: Callable[[str, int], None] | None = None) -> None:
        self._max_spans = max_spans
        self._max_samples = max_samples
        self._count = on_count or (lambda name, n: None)
        self._lock = threading.Lock()
        self._spans: OrderedDict[str, dict[str, Profile]] = OrderedDict()
        self._links: dict[str, SpanLink] = {}

    def record(self, profile: Profile, samples: Iterable[Sample]) -> None:
        """Keep copies of ``samples`` of ``profile`` under their span."""
        dropped = evicted = 0
        with self._lock:
            for s in samples:
                if s.link is None:
                    continue
                sid = s.link.span_id
                per = self._spans.get(sid)
                if per is None:
                    per = self._spans[sid] = {}
                    self._links[sid] = s.link
                    while len(self._spans) > self._max_spans:
                        old, _ = self._spans.popitem(last=False)
                        self._links.pop(old, None)
                        evicted += 1
                held = per.get(profile.name)
                if held is None:
                    held = per[profile.name] = Profile(
                        name=profile.name, sample_types=profile.sample_types,
                        period_type=profile.period_type, period=profile.period,
                        start_ns=profile.start_ns, duration_ns=profile.duration_ns,
                        resource=profile.resource,
                        default_sample_type=profile.default_sample_type)
                if len(held) >= self._max_samples:
                    dropped += 1
                    continue
                if profile.start_ns and profile.start_ns < held.start_ns:
                    held.duration_ns += held.start_ns - profile.start_ns
                    held.start_ns = profile.start_ns
                held.duration_ns = max(held.duration_ns, profile.end_ns - held.start_ns)
                held.add_sample(Sample(s.stack, list(s.values), s.labels, list(s.timestamps),
                                       s.link))
        if dropped:
            self._count("dropped_samples", dropped)
        if evicted:
            self._count("evicted_profiles", evicted)

    def profiles(self, span_id: str) -> list[Profile]:
        """Copies of the span's profiles (one per profile type)."""
        with self._lock:
            return [p.copy() for p in self._spans.get(span_id, {}).values()]

    def link(self, span_id: str) -> SpanLink | None:
        with self._lock:
            return self._links.get(span_id)

    def recent(self, n: int = 100) -> list[tuple[SpanLink, dict[str, int]]]:
        """The newest ``n`` spans with samples: (link, {profile type: samples})."""
        with self._lock:
            ids = list(self._spans)[-n:]
            return [(self._links[i], {name: p.totals()[0] if p.sample_types else 0
                                      for name, p in self._spans[i].items()})
                    for i in reversed(ids)]
