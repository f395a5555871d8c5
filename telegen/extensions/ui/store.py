"""What the web view can show: recent windows in memory, and pprof files on disk.

Every profile (one window of one type for one resource) is a :class:`Window`
with its time range and the processes in it. A :class:`Selection` (source,
profile type, process, time range) picks windows; :meth:`Catalog.select`
merges what it picked into one profile, keeping only the process's samples.

Files are decoded lazily and their summary cached by (path, mtime, size);
decoded profiles of the last few files are kept (LRU).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from telegen.formats.pprof import PprofError, decode
from telegen.helpers.windows import merge_by_type
from telegen.pdata import LabelValue, Profile, Profiles, Sample
from telegen.semconv import (
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_PID,
    SERVICE_NAME,
)
from telegen.untrusted import MiB, Refusals, Refused, read_regular

MEMORY = "memory"
_FILE_SUFFIXES = (".pb.gz", ".pprof", ".pb")
_PROFILE_CACHE = 16
_MAX_FILES = 5000
MAX_FILE_BYTES = 64 * MiB   # a pprof file as stored (decode caps its inflated size too)


@dataclass(frozen=True, slots=True)
class Window:
    id: str
    source: str                     # "memory" or a directory
    name: str                       # profile type
    start_ns: int
    end_ns: int
    samples: int
    processes: dict[str, str] = field(hash=False)   # pid -> comm / executable ("" unknown)
    load: Callable[[], Profile] = field(hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Selection:
    source: str = MEMORY
    type: str = ""
    process: str = ""                # a pid; "" = all
    start_ns: int = 0                # 0 = open
    end_ns: int = 0

    def matches(self, w: Window) -> bool:
        return (w.source == self.source and (not self.type or w.name == self.type)
                and (not self.process or self.process in w.processes)
                and (not self.start_ns or w.end_ns >= self.start_ns)
                and (not self.end_ns or w.start_ns <= self.end_ns))


def processes_of(profile: Profile) -> dict[str, str]:
    out: dict[str, str] = {}
    res_pid = profile.resource.get(PROCESS_PID)
    res_name = _process_name(profile.resource)
    if res_pid is not None:
        out[str(res_pid)] = res_name
    for s in profile:
        labels = dict(s.labels)
        pid = labels.get(PROCESS_PID)
        if pid is not None and str(pid) not in out:
            out[str(pid)] = _process_name(labels) or res_name
    return out


def _process_name(attrs: Mapping[str, LabelValue]) -> str:
    name = attrs.get(SERVICE_NAME) or attrs.get(PROCESS_EXECUTABLE_NAME)
    if not name and attrs.get(PROCESS_EXECUTABLE_PATH):
        name = str(attrs[PROCESS_EXECUTABLE_PATH]).rsplit("/", 1)[-1]
    return str(name or "")


def process_filter(profile: Profile, pid: str) -> Callable[[Sample], bool] | None:
    """Samples of process ``pid`` (all samples when the resource is that process)."""
    if not pid or str(profile.resource.get(PROCESS_PID, "")) == pid:
        return None

    def keep(s: Sample) -> bool:
        return str(dict(s.labels).get(PROCESS_PID, "")) == pid
    return keep


def _constant(profile: Profile) -> Callable[[], Profile]:
    return lambda: profile


class Catalog:
    """Recent windows (bounded) plus the files of ``directories``. Thread-safe."""

    def __init__(self, *, max_windows: int, directories: Iterable[str] = (),
                 refusals: Refusals | None = None) -> None:
        self._refusals = refusals
        self._lock = threading.Lock()
        self._memory: deque[Window] = deque(maxlen=max_windows)
        self._seq = 0
        self.directories = [str(d) for d in directories]
        self._file_meta: dict[tuple[str, int, int], Window] = {}
        self._decoded: OrderedDict[str, Profile] = OrderedDict()
        self.dropped_files = 0

    # -- memory ------------------------------------------------------------------
    def add(self, profiles: Profiles) -> None:
        with self._lock:
            for p in profiles:
                self._seq += 1
                kept = p.copy()
                end = kept.end_ns or kept.start_ns
                self._memory.append(Window(f"m{self._seq}", MEMORY, kept.name, kept.start_ns,
                                           end, len(kept), processes_of(kept),
                                           _constant(kept)))

    # -- files -------------------------------------------------------------------
    def _scan(self, directory: str) -> list[Window]:
        try:
            entries = [e for e in os.scandir(directory)
                       if e.name.endswith(_FILE_SUFFIXES) and not e.name.startswith(".")
                       and e.is_file()]
        except OSError:
            return []
        entries.sort(key=lambda e: e.stat().st_mtime_ns, reverse=True)
        out = []
        for entry in entries[:_MAX_FILES]:
            st = entry.stat()
            key = (entry.path, st.st_mtime_ns, st.st_size)
            with self._lock:
                meta = self._file_meta.get(key)
            if meta is None:
                try:
                    p = self._load(entry.path)
                except (OSError, ValueError):
                    self.dropped_files += 1
                    continue
                start = p.start_ns or st.st_mtime_ns
                meta = Window(entry.path, directory, p.name, start, max(start, p.end_ns),
                              len(p), processes_of(p), functools.partial(self._load, entry.path))
                with self._lock:
                    self._file_meta[key] = meta
            out.append(meta)
        return out

    def _load(self, path: str) -> Profile:
        with self._lock:
            hit = self._decoded.get(path)
            if hit is not None:
                self._decoded.move_to_end(path)
                return hit
        profile = self._read(path)
        with self._lock:
            self._decoded[path] = profile
            while len(self._decoded) > _PROFILE_CACHE:
                self._decoded.popitem(last=False)
        return profile

    def _read(self, path: str) -> Profile:
        """Decode one file: a regular file (no symlink followed at its last
        component, no FIFO waited on), read and inflated within bounds."""
        try:
            return decode(read_regular(path, MAX_FILE_BYTES))
        except Refused as exc:
            self._refuse(exc.reason, f"{path}: {exc.detail}")
            raise ValueError(str(exc)) from None
        except PprofError as exc:
            if exc.reason != "not_pprof":
                self._refuse(exc.reason, f"{path}: {exc}")
            raise

    def _refuse(self, reason: str, detail: str) -> None:
        if self._refusals is not None:
            self._refusals.note("ui_directory", reason, detail)

    # -- queries -----------------------------------------------------------------
    def sources(self) -> list[str]:
        return [MEMORY, *self.directories]

    def windows(self, source: str = MEMORY) -> list[Window]:
        if source == MEMORY:
            with self._lock:
                found = list(self._memory)
        elif source in self.directories:
            found = self._scan(source)
        else:
            return []
        return sorted(found, key=lambda w: (w.start_ns, w.id), reverse=True)

    def select(self, sel: Selection) -> tuple[Profile | None, list[Window]]:
        """The picked windows merged into one profile (None when nothing matched).

        With several profile types in the range, the first type found is used.
        """
        picked = [w for w in self.windows(sel.source) if sel.matches(w)]
        if not sel.type and picked:
            picked = [w for w in picked if w.name == picked[0].name]
        parts = []
        for w in picked:
            p = w.load()
            keep = process_filter(p, sel.process)
            if keep is not None:
                p = p.copy()
                p.replace_samples(s for s in list(p) if keep(s))
            parts.append(p)
        merged = merge_by_type(parts)
        return (merged[0] if merged else None), picked
