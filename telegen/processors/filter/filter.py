"""Hide frames and drop rare stacks, in place."""

from __future__ import annotations

from telegen.component import Consumer, CreateSettings, Host
from telegen.pdata import Frame, Profile, Profiles, Sample
from telegen.processors.filter.config import FilterConfig

_KEEP = object()   # memo marker: frame unchanged
_MISS = object()   # not in a memo


class FilterProcessor:
    mutates_data = True

    def __init__(self, settings: CreateSettings, config: FilterConfig,
                 next_consumer: Consumer) -> None:
        self._next = next_consumer
        self._hide = config.compiled()
        self._min = config.min_samples
        t = settings.telemetry
        self._hidden = t.counter("processor_filter_frames_hidden")
        self._dropped = t.counter("processor_dropped_samples")
        # frames of this batch and of the one before: a frame no longer seen
        # (its process exited, its mapping moved) is forgotten a batch later (#21)
        self._memo: dict[Frame, Frame | None | object] = {}
        self._memo_old: dict[Frame, Frame | None | object] = {}

    def start(self, host: Host) -> None:
        pass

    def shutdown(self, timeout_s: float = 30.0) -> None:
        pass

    def consume(self, profiles: Profiles) -> None:
        for profile in profiles:
            self._filter(profile)
        self._memo_old, self._memo = self._memo, {}
        self._next.consume(profiles)

    def _filter(self, profile: Profile) -> None:
        count_idx = _count_index(profile)
        kept: list[Sample] = []
        for s in profile:
            if self._min > 1 and s.values[count_idx] < self._min:
                self._dropped.add(1)
                continue
            if self._hide is not None:
                s.stack = self._hide_frames(s.stack)
            kept.append(s)
        profile.replace_samples(kept)

    def _hide_frames(self, stack: tuple[Frame, ...]) -> tuple[Frame, ...]:
        out = []
        changed = False
        for f in stack:
            g = self._memo.get(f, _MISS)
            if g is _MISS:
                g = self._memo_old.get(f, _MISS)
                g = self._hide_frame(f) if g is _MISS else self._remember(f, g)
            if g is _KEEP:
                out.append(f)
                continue
            changed = True
            self._hidden.add(1)
            if isinstance(g, Frame):
                out.append(g)
        return tuple(out) if changed else stack

    def _hide_frame(self, frame: Frame) -> Frame | None | object:
        """The frame without hidden functions: None when nothing is left, _KEEP
        when nothing was hidden."""
        assert self._hide is not None
        match = self._hide.match
        result: Frame | None | object
        if not frame.lines:
            result = None if match(frame.name) else _KEEP
        else:
            lines = tuple(ln for ln in frame.lines if not match(ln.function))
            if len(lines) == len(frame.lines):
                result = _KEEP
            elif lines:
                result = frame.with_lines(lines)
            else:
                result = None
        return self._remember(frame, result)

    def _remember(self, frame: Frame, result: Frame | None | object) -> Frame | None | object:
        if len(self._memo) > 100_000:
            self._memo.clear()
        self._memo[frame] = result
        return result


def _count_index(profile: Profile) -> int:
    """The value column that counts samples (``*/count``), else the first."""
    for i, vt in enumerate(profile.sample_types):
        if vt.unit == "count":
            return i
    return 0
