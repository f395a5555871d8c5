"""Per-process metadata, captured once and cached (bounded) until the process exits."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from cachetools import LRUCache

from telegen.pdata import Mapping
from telegen.procinfo.buildid import BuildIdCache
from telegen.procinfo.container import container_id_from_cgroup
from telegen.procinfo.maps import MapEntry, read_maps
from telegen.procinfo.procfs import (
    DELETED,
    PROC,
    alive,
    process_file,
    process_root,
    read_command,
    read_file,
)

log = logging.getLogger(__name__)


@dataclass
class ProcessInfo:
    pid: int
    comm: str = ""
    exe: str = ""                      # as seen inside the process's mount namespace
    cmdline: tuple[str, ...] = ()
    container_id: str = ""
    vpid: int = 0                      # pid inside its own pid namespace (NSpid), 0: unknown
    mappings: tuple[Mapping, ...] = ()  # executable mappings, by address
    captured_ns: int = 0
    exited: bool = False
    _starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._starts = [m.start for m in self.mappings]

    def find_mapping(self, address: int) -> Mapping | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            m = self.mappings[i]
            if address < m.limit:
                return m
        return None


class ProcessIds(NamedTuple):
    """Who a process is, from ``/proc/PID/status``."""

    nspid: int    # its pid in its innermost pid namespace (the last NSpid field); 0 if unsaid
    uid: int      # effective uid
    gid: int      # effective gid


def parse_ids(status_text: str) -> ProcessIds | None:
    """:class:`ProcessIds` of a ``/proc/PID/status`` text; None when its Uid
    or Gid line is missing or malformed."""
    fields: dict[str, list[str]] = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in ("NSpid", "Uid", "Gid"):
            fields[key] = value.split()
    try:
        uid, gid = int(fields["Uid"][1]), int(fields["Gid"][1])
    except (KeyError, IndexError, ValueError):
        return None
    ns = fields.get("NSpid", [])
    return ProcessIds(int(ns[-1]) if ns and ns[-1].isdigit() else 0, uid, gid)


def read_ids(pid: int, proc: str = PROC) -> ProcessIds | None:
    """:func:`parse_ids` of ``pid``; None when it is gone."""
    text = read_file(pid, "status", proc)
    return parse_ids(text) if text is not None else None


def read_process(pid: int, *, proc: str = PROC,
                 build_ids: BuildIdCache | None = None) -> ProcessInfo | None:
    """Everything we keep about ``pid``; None when it is gone (or a kernel thread
    whose maps cannot be read is returned with no mappings)."""
    entries = read_maps(pid, proc)
    if entries is None:
        return None
    command = read_command(pid, proc)
    container = container_id_from_cgroup(read_file(pid, "cgroup", proc) or "")
    ids = read_ids(pid, proc)
    vpid = ids.nspid if ids else 0
    # not ``build_ids or``: an empty cache is falsy (len 0), and a throwaway one
    # made every capture read each mapped file's ELF headers again
    cache = build_ids if build_ids is not None else BuildIdCache(64)
    mappings = tuple(_mapping(e, pid, proc, cache) for e in entries if e.executable)
    return ProcessInfo(pid=pid, comm=command.comm if command else "",
                       exe=command.exe if command else "",
                       cmdline=command.cmdline if command else (),
                       container_id=container, vpid=vpid, mappings=mappings,
                       captured_ns=time.time_ns())


def _mapping(e: MapEntry, pid: int, proc: str, build_ids: BuildIdCache) -> Mapping:
    build_id = ""
    path = e.path
    if e.is_file:
        if e.deleted:
            path = path.removesuffix(DELETED)
            # the file is gone from the tree, but the mapping still reaches it
            build_id = build_ids.get(process_file(pid, f"map_files/{e.start:x}-{e.end:x}", proc))
        else:
            build_id = build_ids.get(process_root(pid, proc) + path)
    return Mapping(start=e.start, limit=e.end, offset=e.offset, file=path, build_id=build_id)


class ProcessCache:
    """Thread-safe, bounded ``pid -> ProcessInfo``.

    Exited processes stay until ``release_exited()`` has been called twice
    after the exit (so the window that still holds their samples can resolve
    them); least recently used entries are evicted beyond ``maxsize``. A
    process gone without its exit being marked (an exit event lost, a zombie
    captured after its exit) is found by ``release_exited()`` and released
    the same way. Whoever keeps its own per-process state registers
    ``on_release(callback)``: ``callback(pids)`` runs (outside the lock) with
    the pids released, so that state goes with the process (#21).
    """

    def __init__(self, maxsize: int = 8192, *, proc: str = PROC,
                 build_ids: BuildIdCache | None = None,
                 refresh_interval_s: float = 5.0) -> None:
        self._proc = proc
        self._build_ids = build_ids if build_ids is not None else BuildIdCache()
        self._cache: LRUCache[int, ProcessInfo] = LRUCache(maxsize)
        self._lock = threading.Lock()
        self._exited_new: set[int] = set()
        self._execed: set[int] = set()      # replaced their image since the last release
        self._exited_old: set[int] = set()
        self._refresh_interval_ns = int(refresh_interval_s * 1e9)
        self._listeners: list[Callable[[list[int]], None]] = []
        self.released = 0              # processes released since creation

    def on_release(self, callback: Callable[[list[int]], None]) -> None:
        """Call ``callback(pids)`` with the pids each ``release_exited()`` drops."""
        self._listeners.append(callback)

    @property
    def build_ids(self) -> BuildIdCache:
        return self._build_ids

    def capture(self, pid: int) -> ProcessInfo | None:
        """(Re)read ``pid`` now; keeps the old entry if the process is already gone."""
        info = read_process(pid, proc=self._proc, build_ids=self._build_ids)
        with self._lock:
            if info is None:
                return self._cache.get(pid)
            self._exited_new.discard(pid)
            self._exited_old.discard(pid)
            self._cache[pid] = info
        return info

    def get(self, pid: int, *, capture: bool = True) -> ProcessInfo | None:
        with self._lock:
            info = self._cache.get(pid)
        if info is None and capture:
            info = self.capture(pid)
        return info

    def find_mapping(self, pid: int, address: int) -> Mapping | None:
        """The mapping holding ``address``; re-reads the maps of a live process
        once per refresh interval when the address is new (dlopen, JIT)."""
        info = self.get(pid)
        if info is None:
            return None
        m = info.find_mapping(address)
        if m is None and not info.exited and \
                time.time_ns() - info.captured_ns > self._refresh_interval_ns:
            fresh = self.capture(pid)
            if fresh is not None:
                m = fresh.find_mapping(address)
        return m

    def invalidate(self, pid: int) -> None:
        """The process replaced its image (exec): forget what we knew; the
        ``on_release`` listeners hear of it at the next :meth:`release_exited`
        (their per-process state is of the old image; they run in the thread
        that releases, never in the caller's)."""
        with self._lock:
            if self._cache.pop(pid, None) is not None:
                self._execed.add(pid)

    def mark_exited(self, pid: int) -> None:
        with self._lock:
            info = self._cache.get(pid)
            if info is not None:
                info.exited = True
                self._exited_new.add(pid)

    def release_exited(self) -> int:
        """Drop processes marked exited before the previous call and tell the
        ``on_release`` listeners; mark those found gone unmarked (released at
        the next call but one). Returns how many were dropped."""
        with self._lock:
            gone: list[int] = []
            for pid in self._exited_old:
                info = self._cache.get(pid)
                if info is not None and info.exited:
                    del self._cache[pid]
                    gone.append(pid)
            self._exited_old, self._exited_new = self._exited_new, set()
            execed, self._execed = [p for p in self._execed if p not in gone], set()
            unmarked = [pid for pid in self._cache.keys()
                        if pid not in self._exited_old]
        for pid in unmarked:           # exits whose event we never saw
            if not alive(pid, self._proc):
                self.mark_exited(pid)
        self.released += len(gone)
        if gone or execed:
            self._notify(gone + execed)
        return len(gone)

    def _notify(self, gone: list[int]) -> None:
        for callback in self._listeners:
            try:
                callback(gone)
            except Exception as exc:     # one listener failing does not stop the others
                log.warning("releasing %d processes: %s: %s", len(gone),
                            type(exc).__name__, exc)

    def pids(self) -> list[int]:
        with self._lock:
            return list(self._cache.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def __contains__(self, pid: object) -> bool:
        with self._lock:
            return pid in self._cache


def container_attributes(pid: int, proc: str = PROC) -> dict[str, str | int]:
    """OTel resource attributes of a containerized ``pid``: ``container.id``
    (from its cgroup) and ``process.vpid`` (its pid in its own pid namespace,
    when that differs from ``pid``); {} for a host process or one that is gone."""
    attrs: dict[str, str | int] = {}
    cid = container_id_from_cgroup(read_file(pid, "cgroup", proc) or "")
    if cid:
        attrs["container.id"] = cid
    ids = read_ids(pid, proc)
    vpid = ids.nspid if ids else 0
    if vpid and vpid != pid:
        attrs["process.vpid"] = vpid
    return attrs
