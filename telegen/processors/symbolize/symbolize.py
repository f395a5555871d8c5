"""Replace raw frames (address + mapping) by symbolized ones, in place.

Warm path: one dict look-up per (pid, frame) in a memo of finished frames;
behind it the Symbolizer's own result cache per (object, file offset). Frames
are never dropped, except kernel frames when ``include_kernel`` is false.

Pushed frames (SECURITY.md). A profile decoded from bytes someone sent
(``Profile.origin == PUSHED``: the OTLP and pprof receivers) names mapping
paths, pids and addresses that are the sender's words: any local user could
name ``/etc/shadow`` and the agent's own pid. Such frames are symbolized
**by build-id only** — the host's debug directories and debuginfod, never a
path or a pid from the data:

* native frames with a build-id: looked up by build-id; the mapping's file
  and the sample's pid are not used; frames without one stay raw
  (refused ``pushed_path``);
* JIT / anonymous frames (they need the sender's pid to find a perf map) and
  kernel frames (kallsyms would name addresses of *this* kernel for a
  sender: a KASLR oracle) stay raw (``pushed_pid``, ``pushed_kernel``);
* their look-ups use a second Symbolizer with its own (smaller) caches, so a
  pushed build-id can neither stand in for nor evict the objects of observed
  processes; the debuginfod client (and its disk cache) is shared;
* at most ``PUSHED_BUILD_IDS_PER_MINUTE`` build-ids not seen before are
  looked up per minute (each may cost a debuginfod download and an object
  cache slot); past that the frame stays raw for now (``build_id_rate``) and
  is tried again in a later batch.

Any frame, observed or pushed, whose build-id is not 8–128 hex digits is left
raw (``bad_build_id``): a build-id becomes a path under the debug directories.
Refusals are counted once per distinct frame as
``refused_inputs{source="symbolize",reason}``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time

from telegen.component import Consumer, CreateSettings, Host
from telegen.pdata import PUSHED, Frame, FrameKind, Line, Mapping, Profile, Profiles, Sample
from telegen.processors.symbolize.config import SymbolizeConfig
from telegen.semconv import PROCESS_PID
from telegen.symbols import Resolution, Symbolizer, SymbolizerOptions, is_anonymous
from telegen.symbols.debuginfod import DebuginfodClient
from telegen.untrusted import Refusals

SOURCES = ("dwarf", "symtab", "dynsym", "gopclntab", "debuginfo_file", "debuginfod", "kallsyms",
           "perfmap", "unknown")
PUSHED_BUILD_IDS_PER_MINUTE = 120
_BUILD_ID = re.compile(r"[0-9a-f]{8,128}")     # fullmatch: "$" would allow a final "\n"
_MEMO_LIMIT = 100_000       # frames remembered per generation (and pushed build-ids)
_PUSHED_PID = -1   # memo key of pushed frames: the sender's pid plays no part
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
        self.refusals = Refusals(t, settings.logger)
        self._debug_dirs = tuple(config.debug_dirs)
        counters = {name: t.counter(name) for name in
                    ("debuginfod_hits", "debuginfod_misses", "debuginfod_errors",
                     "symbolize_provisional_frames")}
        options = SymbolizerOptions(
            demangle_cpp=config.demangle_cpp, demangle_rust=config.demangle_rust,
            debug_dirs=tuple(config.debug_dirs), debuginfod_urls=[],
            debuginfod_cache_dir=config.debuginfod_cache_dir,
            debuginfod_timeout_s=float(config.debuginfod_timeout),
            cache_size=config.cache_size, result_cache_size=config.cache_size * 2048)
        self._rejected = lambda reason: t.counter("symbolize_rejected_objects", reason=reason)
        self.symbolizer = Symbolizer(options, counters=counters, refusals=self.refusals,
                                     rejected_counter=self._rejected)
        # Pushed frames get their own caches: an object opened for a pushed
        # build-id (debug file only) must never stand in for the binary an
        # observed process maps under the same build-id, nor evict it.
        pushed_slots = max(8, config.cache_size // 4)
        self._pushed_options = dataclasses.replace(
            options, cache_size=pushed_slots, result_cache_size=pushed_slots * 2048)
        self._pushed_counters = counters
        self._pushed: Symbolizer | None = None
        self._debuginfod: DebuginfodClient | None = None
        if config.debuginfod_urls:   # ours: deadline, size cap, http policy, refusals
            self._debuginfod = self.symbolizer.debuginfod = DebuginfodClient(
                config.debuginfod_urls, config.debuginfod_cache_dir,
                timeout_s=float(config.debuginfod_timeout),
                deadline_s=float(config.debuginfod_deadline),
                max_size=config.debuginfod_max_bytes,
                allow_insecure=config.debuginfod_allow_insecure,
                counters={name: t.counter(f"debuginfod_{name}")
                          for name in ("hits", "misses", "errors")},
                refusals=self.refusals)
        # two generations: the frames of this batch and of the one before (a
        # short process's frames are new objects at its own addresses: one
        # dict kept them all until its limit, ~112 MB on a churning host)
        self._memo: dict[tuple[int, Frame], tuple[Frame | None, str]] = {}
        self._memo_old: dict[tuple[int, Frame], tuple[Frame | None, str]] = {}
        # (pid, whole stack) -> (symbolized stack, frames per source): a steady
        # workload's stacks come back every window; two generations like _memo
        self._stacks: dict[tuple[int, tuple[Frame, ...]], _StackHit] = {}
        self._stacks_old: dict[tuple[int, tuple[Frame, ...]], _StackHit] = {}
        # the same stacks by identity: a receiver hands the same tuple for the same
        # stack window after window (its own memos), and hashing a tuple of frames
        # costs ~0.2 µs a frame; the entry holds the tuple, so its id is not reused
        self._by_id: dict[int, tuple[tuple[Frame, ...], int, _StackHit]] = {}
        self._by_id_old: dict[int, tuple[tuple[Frame, ...], int, _StackHit]] = {}
        self._mappings: dict[tuple[Mapping, bool, bool, bool, bool], Mapping] = {}
        self._pushed_build_ids: set[str] = set()
        self._demangler_seen: dict[str, int] = {}
        self._count_lock = threading.Lock()   # counters only; never held over a look-up
        self._budget = float(PUSHED_BUILD_IDS_PER_MINUTE)
        self._budget_at = time.monotonic()

    def start(self, host: Host) -> None:
        pass

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self.symbolizer.close()
        if self._pushed is not None:
            self._pushed.close()

    def _pushed_symbolizer(self) -> Symbolizer:
        if self._pushed is None:
            self._pushed = Symbolizer(self._pushed_options, counters=self._pushed_counters,
                                      refusals=self.refusals, rejected_counter=self._rejected)
            self._pushed.debuginfod = self._debuginfod
        return self._pushed

    def consume(self, profiles: Profiles) -> None:
        counts: dict[str, int] = {}
        self._memo_old, self._memo = self._memo, {}
        self._stacks_old, self._stacks = self._stacks, {}
        self._by_id_old, self._by_id = self._by_id, {}
        for profile in profiles:
            self._symbolize(profile, counts)
        for source, n in counts.items():
            self._frames[source].add(n)
            if source == "unknown":
                self._unknown.add(n)
        self._count_demangler()
        self._next.consume(profiles)

    def _count_demangler(self) -> None:
        """Names c++filt was not given (control characters, too long) or did
        not answer in time: ``refused_inputs{source="demangle"}``."""
        demanglers = [self.symbolizer.demangler]
        if self._pushed is not None:
            demanglers.append(self._pushed.demangler)
        refused = sum(d.refused for d in demanglers)
        timeouts = sum(d.timeouts for d in demanglers)
        with self._count_lock:
            for reason, now in (("unsendable_name", refused), ("timeout", timeouts)):
                for _ in range(now - self._demangler_seen.get(reason, 0)):
                    self.refusals.note("demangle", reason)
                self._demangler_seen[reason] = now

    def _symbolize(self, profile: Profile, counts: dict[str, int]) -> None:
        memo, old = self._memo, self._memo_old
        pushed = profile.origin == PUSHED
        # the process: on the resource (one profile per process) or, in a
        # whole-host profile, on each sample
        default_pid = profile.resource.get(PROCESS_PID, 0)
        stacks, stacks_old = self._stacks, self._stacks_old
        by_id, by_id_old = self._by_id, self._by_id_old
        samples: list[Sample] = []
        for s in profile:
            pid = _PUSHED_PID if pushed else _pid(
                next((v for k, v in s.labels if k == PROCESS_PID), default_pid))
            stack = s.stack
            same = by_id.get(id(stack)) or by_id_old.get(id(stack))
            if same is not None and same[0] is stack and same[1] == pid:
                known = same[2]
                by_id[id(stack)] = same
            else:
                key = (pid, stack)
                found = stacks.get(key) or stacks_old.get(key)
                if found is not None:
                    known = stacks[key] = found
                else:
                    known = self._stack(pid, stack, pushed, memo, old)
                    if known[2] and len(stacks) < _MEMO_LIMIT:
                        stacks[key] = known
                if known[2] and len(by_id) < _MEMO_LIMIT:
                    by_id[id(stack)] = (stack, pid, known)
            s.stack = known[0]
            for source, n in known[1]:
                counts[source] = counts.get(source, 0) + n
            samples.append(s)
        profile.replace_samples(samples)   # frames that became equal merge

    def _stack(self, pid: int, stack: tuple[Frame, ...], pushed: bool,
               memo: dict[tuple[int, Frame], tuple[Frame | None, str]],
               old: dict[tuple[int, Frame], tuple[Frame | None, str]]) -> _StackHit:
        """The symbolized stack, its frames per source, and whether every
        frame's answer is final (remembered: no DWARF index pending, no JIT
        frame a perf map may name later)."""
        out: list[Frame] = []
        tally: dict[str, int] = {}
        final = True
        for f in stack:
            hit = memo.get((pid, f))
            if hit is None:
                hit = old.get((pid, f))
                if hit is not None:
                    memo[(pid, f)] = hit
            if hit is None:
                hit = self._pushed_frame(f) if pushed else self._frame(f, pid)
                final = final and (pid, f) in memo
            new, source = hit
            if source:
                tally[source] = tally.get(source, 0) + 1
            if new is not None:
                out.append(new)
        return tuple(out), tuple(tally.items()), final

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
        elif mapping.build_id and not _BUILD_ID.fullmatch(mapping.build_id.lower()):
            self.refusals.note("symbolize", "bad_build_id", mapping.build_id[:200])
            result = (frame, "unknown")
        else:
            res = self.symbolizer.native(frame.address, file=mapping.file, start=mapping.start,
                                         offset=mapping.offset, build_id=mapping.build_id,
                                         pid=pid)
            remember = not res.pending   # its DWARF index is being built: asked again later
        if res is not None:
            result = (self._apply(frame, res), res.source)
        if remember:
            self._remember(pid, frame, result)
        return result

    def _pushed_frame(self, frame: Frame) -> tuple[Frame | None, str]:
        """A frame of a pushed profile: by build-id only (module docstring)."""
        kind, mapping = frame.kind, frame.mapping
        if frame.lines or kind not in (FrameKind.NATIVE, FrameKind.KERNEL, FrameKind.JIT):
            return self._remember(_PUSHED_PID, frame, (frame, ""))
        if kind is FrameKind.KERNEL:
            if not self._include_kernel:
                return self._remember(_PUSHED_PID, frame, (_DROP, ""))
            return self._refuse(frame, "pushed_kernel", f"0x{frame.address:x}")
        if kind is FrameKind.JIT or mapping is None or is_anonymous(mapping.file):
            return self._refuse(frame, "pushed_pid", f"0x{frame.address:x}")
        build_id = mapping.build_id.lower()
        if not build_id:
            return self._refuse(frame, "pushed_path", mapping.file[:200])
        if not _BUILD_ID.fullmatch(build_id):
            return self._refuse(frame, "bad_build_id", build_id[:200])
        if build_id not in self._pushed_build_ids:
            if not self._spend():
                self.refusals.note("symbolize", "build_id_rate", build_id)
                return (frame, "unknown")        # not remembered: tried again later
            if len(self._pushed_build_ids) >= _MEMO_LIMIT:
                self._pushed_build_ids.clear()
            self._pushed_build_ids.add(build_id)
            self._prefetch(build_id)
        res = self._pushed_symbolizer().native(
            frame.address, file="", start=mapping.start, offset=mapping.offset,
            build_id=build_id, pid=0)
        return self._remember(_PUSHED_PID, frame, (self._apply(frame, res), res.source))

    def _prefetch(self, build_id: str) -> None:
        """Download the debug file of a pushed build-id *before* asking the
        symbolizer, so the download runs outside the symbolizer's lock:
        frames of other pipelines' threads are not held up by a slow server."""
        client = self._debuginfod
        if client is None or any(os.path.isfile(os.path.join(
                d, ".build-id", build_id[:2], build_id[2:] + ".debug")) for d in self._debug_dirs):
            return
        client.debuginfo(build_id)

    def _refuse(self, frame: Frame, reason: str, detail: str) -> tuple[Frame | None, str]:
        self.refusals.note("symbolize", reason, detail)
        return self._remember(_PUSHED_PID, frame, (frame, "unknown"))

    def _spend(self) -> bool:
        """One look-up of a build-id not pushed before, from a bucket refilled
        at PUSHED_BUILD_IDS_PER_MINUTE."""
        with self._count_lock:
            now = time.monotonic()
            rate = PUSHED_BUILD_IDS_PER_MINUTE / 60.0
            self._budget = min(float(PUSHED_BUILD_IDS_PER_MINUTE),
                               self._budget + (now - self._budget_at) * rate)
            self._budget_at = now
            if self._budget < 1.0:
                return False
            self._budget -= 1.0
            return True

    def _remember(self, pid: int, frame: Frame,
                  result: tuple[Frame | None, str]) -> tuple[Frame | None, str]:
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


_StackHit = tuple[tuple[Frame, ...], tuple[tuple[str, int], ...], bool]


def _pid(value: object) -> int:
    return value if isinstance(value, int) else int(str(value)) if str(value).isdigit() else 0
