"""Linking one profile's samples to spans (pure functions over pdata).

* A sample with ``span_id`` (and ``trace_id``) labels — Go pprof labels, SDKs —
  gets them as its :class:`~telegen.pdata.SpanLink`; a missing trace id is
  taken from the span store, and labels that name no known span stay labels.
* A sample without a link that has a pid (label or resource ``process.pid``),
  a tid (label ``thread.id``) and timestamps gets
  the innermost span active on that thread at each timestamp. When its
  timestamps fall in different spans (or partly in none) it is split into one
  sample per span, each with that span's timestamps and values proportional
  to their number (largest remainder, so every column's total is exact).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from telegen.pdata import LabelValue, Profile, Sample, SpanLink
from telegen.ptrace import SpanRecord
from telegen.semconv import PROCESS_PID, THREAD_ID

FindSpan = Callable[[int, int, int], "SpanRecord | None"]
GetSpan = Callable[[str], "SpanRecord | None"]

_SPAN_HEX = re.compile(r"^[0-9a-fA-F]{16}$")
_TRACE_HEX = re.compile(r"^[0-9a-fA-F]{32}$")
_SPAN_LABELS = ("span_id", "trace_id")


@dataclass
class LinkCounts:
    linked: int = 0          # sample events (timestamps) given a span by time
    unlinked: int = 0        # timestamped events on a known thread, in no span
    split: int = 0           # samples split across spans
    normalised: int = 0      # samples whose span labels became the link
    unresolved: int = 0      # span_id labels naming no known span (kept as labels)
    no_thread: int = 0       # samples without pid/tid/timestamps (passed as they are)
    max_ts: int = 0


def _int(value: LabelValue | None) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def split_values(values: list[int], weights: list[int]) -> list[list[int]]:
    """``values`` shared out in proportion to ``weights``; each column sums exactly."""
    whole = sum(weights)
    out = [[0] * len(values) for _ in weights]
    for col, v in enumerate(values):
        shares = [v * w // whole for w in weights]
        rest = v - sum(shares)
        order = sorted(range(len(weights)), key=lambda i: -((v * weights[i]) % whole))
        for i in order[:rest]:
            shares[i] += 1
        for i, share in enumerate(shares):
            out[i][col] = share
    return out


def _normalise(s: Sample, get: GetSpan, counts: LinkCounts) -> None:
    labels = dict(s.labels)
    span = labels.get("span_id")
    if not isinstance(span, str) or not _SPAN_HEX.match(span):
        return
    trace = labels.get("trace_id")
    if not isinstance(trace, str) or not _TRACE_HEX.match(trace):
        known = get(span.lower())
        if known is None:
            counts.unresolved += 1
            return
        trace = known.trace_id
    s.link = SpanLink(trace.lower(), span.lower())
    s.labels = tuple(kv for kv in s.labels if kv[0] not in _SPAN_LABELS)
    counts.normalised += 1


def link_profile(profile: Profile, find: FindSpan, get: GetSpan, counts: LinkCounts) -> None:
    """Link every sample of ``profile`` in place (see the module docstring)."""
    default_pid = _int(profile.resource.get(PROCESS_PID))
    out: list[Sample] = []
    changed = False
    for s in profile:
        if s.link is None and any(k == "span_id" for k, _ in s.labels):
            _normalise(s, get, counts)
            changed = True
        if s.timestamps:
            counts.max_ts = max(counts.max_ts, max(s.timestamps))
        if s.link is not None:
            out.append(s)
            continue
        labels = dict(s.labels)
        pid = _int(labels.get(PROCESS_PID)) or default_pid
        tid = _int(labels.get(THREAD_ID))
        if pid is None or tid is None or not s.timestamps:
            counts.no_thread += 1
            out.append(s)
            continue
        groups: dict[SpanRecord | None, list[int]] = {}
        for t in s.timestamps:
            groups.setdefault(find(pid, tid, t), []).append(t)
        for span, stamps in groups.items():
            if span is None:
                counts.unlinked += len(stamps)
            else:
                counts.linked += len(stamps)
        if len(groups) == 1:
            [span] = groups
            if span is not None:
                s.link = SpanLink(span.trace_id, span.span_id)
                changed = True
            out.append(s)
            continue
        counts.split += 1
        changed = True
        spans = list(groups)
        parts = split_values(s.values, [len(groups[sp]) for sp in spans])
        for span, values in zip(spans, parts, strict=True):
            link = SpanLink(span.trace_id, span.span_id) if span is not None else None
            piece = Sample(s.stack, values, s.labels, sorted(groups[span]), link)
            out.append(piece)
    if changed:
        profile.replace_samples(out)
