"""Merge the profiles of one window by profile type, across resources.

Exporters that write one artefact per profile type (a pprof file, a console
table) call :func:`merge_by_type`: profiles with the same name and value
columns become one profile. Resource attributes all members share stay
resource attributes; those that differ (``process.pid`` of each process, say)
become sample labels, so nothing is lost. Inputs are not modified.
"""

from __future__ import annotations

from collections.abc import Iterable

from telegen.pdata import Labels, LabelValue, Profile, Sample


def _group_key(p: Profile) -> tuple[object, ...]:
    return (p.name, p.sample_types, p.period_type, p.period)


def merge_by_type(profiles: Iterable[Profile]) -> list[Profile]:
    """One profile per (name, sample types, period), in first-seen order. A
    profile alone of its type is returned itself, not copied (every caller
    only reads the result; copying every sample was half of the batch
    thread's CPU behind a pprof file exporter)."""
    groups: dict[tuple[object, ...], list[Profile]] = {}
    for p in profiles:
        groups.setdefault(_group_key(p), []).append(p)
    return [members[0] if len(members) == 1 else merge_group(members)
            for members in groups.values()]


def merge_group(members: list[Profile]) -> Profile:
    """Merge profiles of one type; differing resource attributes become labels."""
    first = members[0]
    common: dict[str, LabelValue] = {}
    for key, value in first.resource.items():
        if all(m.resource.get(key, _MISSING) == value for m in members[1:]):
            common[key] = value
    starts = [m.start_ns for m in members if m.start_ns]
    start = min(starts) if starts else 0
    end = max(m.end_ns for m in members)
    comments: list[str] = []
    for m in members:
        comments += [c for c in m.comments if c not in comments]
    out = Profile(name=first.name, sample_types=first.sample_types,
                  period_type=first.period_type, period=first.period, start_ns=start,
                  duration_ns=max(0, end - start) if start else first.duration_ns,
                  resource=common, default_sample_type=first.default_sample_type,
                  comments=comments)
    for m in members:
        extra = tuple((k, v) for k, v in m.resource.items() if k not in common)
        for s in m:
            labels = _sorted(s.labels + extra) if extra else s.labels
            out.add_sample(Sample(s.stack, list(s.values), labels, list(s.timestamps), s.link))
    return out


def _sorted(labels: Labels) -> Labels:
    try:
        return tuple(sorted(labels))
    except TypeError:  # str and int values under one key
        return tuple(sorted(labels, key=lambda kv: (kv[0], isinstance(kv[1], str), str(kv[1]))))


_MISSING = object()
