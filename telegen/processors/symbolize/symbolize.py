"""Replace raw frames (address + mapping) by symbolized ones, in place.

Warm path: one dict look-up per (pid, frame) in a memo of finished frames;
behind it the Symbolizer's own result cache per (object, file offset). Frames
are never dropped, except kernel frames when ``include_kernel`` is false.
"""

from __future__ import annotations

import dataclasses

from telegen.component import Consumer, CreateSettings, Host
from telegen.pdata import Frame, FrameKind, Line, Mapping, Profile, Profiles, Sample
from telegen.processors.symbolize.config import SymbolizeConfig
from telegen.symbols import Resolution, Symbolizer, SymbolizerOptions, is_anonymous

SOURCES = ("dwarf", "symtab", "dynsym", "debuginfo_file", "debuginfod", "kallsyms",
           "perfmap", "unknown")
_MEMO_LIMIT = 500_000
_DROP = None   # memo value for a kernel frame removed from stacks


class SymbolizeProcessor:
    mutates_data = True

    def __init__(self, settings: CreateSettings, config: SymbolizeConfig,
                 next_consumer: Consumer) -> None:
        self._next = next_consumer
        self._include_kernel = config.include_kernel
        t = settings.telemetry
        self._frames = {s: t.counter("symbolize_frames", source=s) for s in SOURCES}
        self._unknown = t.counter("symbolize_unknown_frames")
        self.symbolizer = Symbolizer(SymbolizerOptions(
            demangle_cpp=config.demangle_cpp, demangle_rust=config.demangle_rust,
            debug_dirs=tuple(config.debug_dirs), debuginfod_urls=list(config.debuginfod_urls),
            debuginfod_cache_dir=config.debuginfod_cache_dir,
            debuginfod_timeout_s=float(config.debuginfod_timeout),
            cache_size=config.cache_size, result_cache_size=config.cache_size * 2048,
        ), counters={name: t.counter(name) for name in
                     ("debuginfod_hits", "debuginfod_misses", "debuginfod_errors")})
        self._memo: dict[tuple[int, Frame], tuple[Frame | None, str]] = {}
        self._mappings: dict[tuple[Mapping, bool, bool, bool, bool], Mapping] = {}

    def start(self, host: Host) -> None:
        pass

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self.symbolizer.close()

    def consume(self, profiles: Profiles) -> None:
        counts: dict[str, int] = {}
        for profile in profiles:
            self._symbolize(profile, counts)
        for source, n in counts.items():
            self._frames[source].add(n)
            if source == "unknown":
                self._unknown.add(n)
        self._next.consume(profiles)

    def _symbolize(self, profile: Profile, counts: dict[str, int]) -> None:
        memo = self._memo
        default_pid = profile.resource.get("pid", 0)
        samples: list[Sample] = []
        for s in profile:
            pid = next((v for k, v in s.labels if k == "pid"), default_pid)
            pid = pid if isinstance(pid, int) else int(pid) if str(pid).isdigit() else 0
            out: list[Frame] = []
            for f in s.stack:
                hit = memo.get((pid, f))
                if hit is None:
                    hit = self._frame(f, pid)
                new, source = hit
                if source:
                    counts[source] = counts.get(source, 0) + 1
                if new is not None:
                    out.append(new)
            s.stack = tuple(out)
            samples.append(s)
        profile.replace_samples(samples)   # frames that became equal merge

    def _frame(self, frame: Frame, pid: int) -> tuple[Frame | None, str]:
        """Symbolize one frame and remember it. Source '' = not ours to count."""
        kind, mapping = frame.kind, frame.mapping
        res: Resolution | None = None
        remember = True
        if frame.lines or kind not in (FrameKind.NATIVE, FrameKind.KERNEL, FrameKind.JIT):
            result: tuple[Frame | None, str] = (frame, "")
        elif kind is FrameKind.KERNEL:
            if not self._include_kernel:
                result = (_DROP, "")
            else:
                res = self.symbolizer.kernel(frame.address)
        elif kind is FrameKind.JIT or mapping is None or is_anonymous(mapping.file):
            res = self.symbolizer.jit(frame.address, pid)
            remember = bool(res.lines)   # the perf map may name it later
        else:
            res = self.symbolizer.native(frame.address, file=mapping.file, start=mapping.start,
                                         offset=mapping.offset, build_id=mapping.build_id,
                                         pid=pid)
        if res is not None:
            result = (self._apply(frame, res), res.source)
        if remember:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[(pid, frame)] = result
        return result

    def _apply(self, frame: Frame, res: Resolution) -> Frame:
        mapping = frame.mapping
        if mapping is not None:
            key = (mapping, res.has_functions, res.has_filenames, res.has_line_numbers,
                   res.has_inline_frames)
            new_mapping = self._mappings.get(key)
            if new_mapping is None:
                new_mapping = dataclasses.replace(
                    mapping, has_functions=res.has_functions, has_filenames=res.has_filenames,
                    has_line_numbers=res.has_line_numbers,
                    has_inline_frames=res.has_inline_frames)
                if len(self._mappings) > 50_000:
                    self._mappings.clear()
                self._mappings[key] = new_mapping
            mapping = new_mapping
        if not res.lines and mapping == frame.mapping:
            return frame
        return Frame(frame.kind, frame.address, mapping, tuple(Line(*ln) for ln in res.lines))
