"""Attaching the memory profiler's uprobes to the allocators of processes.

Whole host (no targeting): one set of probes on the system libc (the one the
agent itself maps), for every process using that file. Every process on the
host then traps on each allocation call (~5 µs each here, see README).

Targeted (``pids`` / ``process_names``): probes are attached per process,
with the kernel's per-process uprobe filter (``pid`` of the perf event), so
the breakpoint is written only into targeted processes and untargeted ones
sharing the same libc do not trap at all. Allocator objects are found in
``/proc/PID/maps`` (libc, a binary that defines its own ``malloc`` -
statically linked or an alternative allocator such as jemalloc - through
``/proc/PID/root`` so containers work); each is opened once by descriptor
inside the process's root without following its symlinks
(:func:`telegen.untrusted.open_in_root`), its symbols read once per inode
through the struct-level header check, and its uprobes attached (``perf_event_open`` on the
uprobe PMU + ``PERF_EVENT_IOC_SET_BPF`` with programs the compiler child
loaded: no LLVM, no tracefs entry) through ``/proc/self/fd/N`` of that
descriptor — the file that was checked, never a path the tenant can swap
for a symlink in between. A process is attached when first seen (start
scan, exec, first sample), retried while its dynamic loader has not mapped
libc yet, and detached when it exits (exit event, or the liveness sweep)
and at shutdown.

All attaching runs in one named thread so BPF event callbacks never block
on ELF parsing or perf_event_open.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from telegen.procinfo.elfheaders import ProgramHeader, read_headers
from telegen.procinfo.maps import executable_files, open_host_file
from telegen.procinfo.procfs import PROC, fd_path, process_root
from telegen.procinfo.times import start_ticks
from telegen.untrusted import Refusals, Refused, open_in_root

log = logging.getLogger(__name__)

# (symbol, BPF function) of allocating entry points, in priority order: a
# symbol whose address an earlier one already has (aligned_alloc == memalign
# in glibc) is not probed twice.
ALLOC_ENTRIES = (("malloc", "mem_malloc"), ("calloc", "mem_calloc"),
                 ("realloc", "mem_realloc"), ("posix_memalign", "mem_posix_memalign"),
                 ("aligned_alloc", "mem_aligned"), ("memalign", "mem_aligned"))
FREE_ENTRY = ("free", "mem_free")
RETURN_FN = "mem_return"
PT_LOAD = 1
RETRY_FOR_S = 2.0          # how long to wait for a new process to map its allocator
RETRY_EVERY_S = 0.005
SWEEP_EVERY_S = 1.0
MAX_PROCESSES = 64         # <= 11 perf event fds per process
MAX_SYMBOL_TABLE = 64 << 20    # a .dynsym/.symtab larger than this is not walked


@dataclass
class AllocatorObject:
    path: str                              # inside the process's root
    fd: int                                # open while any process is probed through it
    symbols: dict[str, int]                # symbol -> file offset (deduplicated)
    users: set[int] = field(default_factory=set)


def allocator_symbols(fd: int, *, inuse: bool) -> dict[str, int]:
    """Defined allocator functions of the ELF file open on ``fd`` (.dynsym,
    else .symtab), as file offsets (what a uprobe is placed at). The file is a
    tenant's: header tables are checked with ``struct`` first and symbol
    tables over ``MAX_SYMBOL_TABLE`` skipped."""
    # imported here (#21): only the memory profiler needs it, and it is ~5 MB
    # resident once imported
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    wanted = [name for name, _ in ALLOC_ENTRIES] + ([FREE_ENTRY[0]] if inuse else [])
    found: dict[str, int] = {}
    headers = read_headers(fd)
    with os.fdopen(os.dup(fd), "rb") as f:
        elf = ELFFile(f)
        for section in (".dynsym", ".symtab"):
            header = headers.section(section)
            if header is None or header.size > MAX_SYMBOL_TABLE:
                continue
            table = elf.get_section_by_name(section)
            if not isinstance(table, SymbolTableSection):
                continue
            for sym in table.iter_symbols():
                # functions only: an IFUNC symbol (pyelftools says STT_LOOS)
                # is its resolver, run once at relocation, not the allocator
                if (sym.name in wanted and sym.name not in found
                        and sym["st_info"]["type"] == "STT_FUNC"
                        and sym["st_shndx"] != "SHN_UNDEF" and sym["st_value"]):
                    found[sym.name] = int(sym["st_value"])
    if "malloc" not in found:
        return {}
    out: dict[str, int] = {}
    for name in wanted:
        offset = file_offset(headers.segments, found[name]) if name in found else None
        if offset is not None and offset not in out.values():
            out[name] = offset
    return out


def file_offset(segments: list[ProgramHeader], vaddr: int) -> int | None:
    """The file offset of virtual address ``vaddr`` (its PT_LOAD segment)."""
    for seg in segments:
        if seg.type == PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
            return vaddr - seg.vaddr + seg.offset
    return None


def mapped_files(pid: int, proc: str = PROC) -> list[str]:
    """Executable file mappings of a process (paths inside its root)."""
    return executable_files(pid, proc)


def start_time(pid: int, proc: str = PROC) -> int | None:
    """When ``pid`` started (clock ticks since boot); None when it is gone."""
    return start_ticks(pid, proc)


class Uprobes:
    def __init__(self, bpf: Any, *, inuse: bool, wanted: Callable[[int], bool],
                 on_error: Callable[[BaseException], None], proc: str = PROC,
                 refusals: Refusals | None = None) -> None:
        self._bpf = bpf
        self.refusals = refusals or Refusals(None, log)
        self._inuse = inuse
        self._wanted = wanted
        self._on_error = on_error
        self._proc = proc
        self._objects: dict[tuple[int, int], AllocatorObject] = {}
        self._not_allocators: set[tuple[int, int]] = set()
        self._attached: dict[int, tuple[int | None, list[int], list[tuple[int, int]]]] = {}
        self._system: list[int] = []
        self._system_fd = -1
        self._retry: dict[int, float] = {}        # pid -> give up at (monotonic)
        self._queue: queue.Queue[tuple[str, int]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ebpf-uprobes", daemon=True)
        self.failures = 0
        self.skipped = 0          # processes over MAX_PROCESSES or without an allocator

    # -- public ----------------------------------------------------------------------
    def start(self, pids: Iterable[int] | None) -> None:
        """``pids`` None: whole host (the system libc); else attach these now."""
        fns = [fn for _, fn in ALLOC_ENTRIES] + ([FREE_ENTRY[1], RETURN_FN] if self._inuse else [])
        missing = [fn for fn in dict.fromkeys(fns) if fn.encode() not in self._bpf.funcs]
        if missing:                            # loaded (verified) by the child: fail fast
            raise RuntimeError(f"memory: programs {missing} were not loaded")
        if pids is None:
            self._attach_system()
        else:
            for pid in pids:
                self._attach(pid)
        self._thread.start()

    def seen(self, pid: int) -> None:
        self._queue.put(("seen", pid))

    def exec(self, pid: int) -> None:
        self._queue.put(("exec", pid))

    def exited(self, pid: int) -> None:
        self._queue.put(("exit", pid))

    def attached_pids(self) -> set[int]:
        with self._lock:
            return set(self._attached)

    def probe_count(self) -> int:
        with self._lock:
            return len(self._system) + sum(len(evs) for _, evs, _ in self._attached.values())

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and detach every probe. Idempotent, never raises."""
        self._stop.set()
        self._queue.put(("stop", 0))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        with self._lock:
            pids = list(self._attached)
        for pid in pids:
            self._detach(pid)
        self._detach_events(self._system)
        self._system = []
        if self._system_fd >= 0:
            os.close(self._system_fd)
            self._system_fd = -1

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_EVERY_S
        while not self._stop.is_set():
            timeout = RETRY_EVERY_S if self._retry else max(0.0, next_sweep - time.monotonic())
            try:
                op, pid = self._queue.get(timeout=timeout)
                self._handle(op, pid)
            except queue.Empty:
                pass
            except Exception as exc:      # never let the thread die
                self._on_error(exc)
            try:
                self._retry_due()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_EVERY_S
                    self._sweep()
            except Exception as exc:
                self._on_error(exc)

    def _handle(self, op: str, pid: int) -> None:
        if op == "seen":
            if pid not in self._attached and pid not in self._retry and self._wanted(pid):
                self._attach(pid)
        elif op == "exec":
            self._detach(pid)
            self._retry.pop(pid, None)
            if self._wanted(pid):
                self._attach(pid)
        elif op == "exit":
            self._retry.pop(pid, None)
            self._detach(pid)

    def _retry_due(self) -> None:
        now = time.monotonic()
        for pid, give_up in list(self._retry.items()):
            if self._stop.is_set():
                return
            del self._retry[pid]
            if now < give_up and start_time(pid, self._proc) is not None:
                self._attach(pid, give_up)

    def _sweep(self) -> None:
        """Detach processes that are gone (or whose pid was reused)."""
        with self._lock:
            items = [(pid, st) for pid, (st, _, _) in self._attached.items()]
        for pid, st in items:
            if start_time(pid, self._proc) != st:
                self._detach(pid)

    # -- attaching ---------------------------------------------------------------------
    def _attach_system(self) -> None:
        path = next((p for p in mapped_files(os.getpid(), self._proc)
                     if os.path.basename(p).startswith("libc.so")), None)
        if path is None:
            raise RuntimeError("memory: no libc mapped in the agent; nothing to probe")
        self._system_fd = open_host_file(path)     # the agent's own libc: trusted
        symbols = allocator_symbols(self._system_fd, inuse=self._inuse)
        self._system = self._attach_object(fd_path(self._system_fd), symbols, -1)
        log.info("memory: %d uprobes on %s (whole host: every process using it)",
                 len(self._system), path)

    def _objects_of(self, pid: int) -> list[tuple[tuple[int, int], AllocatorObject, str]]:
        """(inode, object, path to attach to) of each allocator mapped; the path
        is ``/proc/self/fd/N`` of the object's own descriptor."""
        out = []
        root = process_root(pid, self._proc)
        for path in mapped_files(pid, self._proc):
            try:
                fd = open_in_root(root, path)
            except Refused as exc:
                self.refusals.note_exc("mapped_file", exc)
                continue
            except OSError:
                continue
            st = os.fstat(fd)
            inode = (st.st_dev, st.st_ino)
            obj = self._objects.get(inode)
            if obj is not None or inode in self._not_allocators:
                os.close(fd)
                if obj is not None:
                    out.append((inode, obj, fd_path(obj.fd)))
                continue
            try:
                symbols = allocator_symbols(fd, inuse=self._inuse)
            except Refused as exc:
                self.refusals.note_exc("mapped_file", exc)
                symbols = {}
            except Exception:
                symbols = {}
            if not symbols:
                os.close(fd)
                self._not_allocators.add(inode)
                continue
            obj = self._objects[inode] = AllocatorObject(path, fd, symbols)
            out.append((inode, obj, fd_path(fd)))
        return out

    def _attach(self, pid: int, give_up: float | None = None) -> None:
        if pid in self._attached:
            return
        if len(self._attached) >= MAX_PROCESSES:
            self.skipped += 1
            log.warning("memory: not probing pid %d: %d processes already probed", pid,
                        MAX_PROCESSES)
            return
        st = start_time(pid, self._proc)
        if st is None:
            return
        try:
            objects = self._objects_of(pid)
        except OSError:
            return                                    # gone
        if not objects:
            # a new process: its loader has not mapped libc yet
            give_up = give_up if give_up is not None else time.monotonic() + RETRY_FOR_S
            if time.monotonic() < give_up:
                self._retry[pid] = give_up
            else:
                self.skipped += 1
                log.info("memory: pid %d maps no allocator (malloc) to probe", pid)
            return
        events: list[int] = []
        for _, obj, reachable in objects:
            events += self._attach_object(reachable, obj.symbols, pid)
            obj.users.add(pid)
        with self._lock:
            self._attached[pid] = (st, events, [inode for inode, _, _ in objects])
        log.debug("memory: pid %d: %d uprobes", pid, len(events))

    def _attach_object(self, path: str, symbols: dict[str, int], pid: int) -> list[int]:
        entries = dict(ALLOC_ENTRIES)
        events: list[int] = []
        try:
            for name, offset in symbols.items():
                if name == FREE_ENTRY[0]:
                    events.append(self._bpf.attach_uprobe(FREE_ENTRY[1], path, offset, pid=pid))
                    continue
                events.append(self._bpf.attach_uprobe(entries[name], path, offset, pid=pid))
                if self._inuse:
                    events.append(self._bpf.attach_uprobe(RETURN_FN, path, offset, pid=pid,
                                                          retprobe=True))
        except Exception as exc:
            self.failures += 1
            self._on_error(RuntimeError(f"memory: attaching uprobes to {path} "
                                        f"(pid {pid}) failed: {exc}"))
        return events

    def _detach(self, pid: int) -> None:
        with self._lock:
            entry = self._attached.pop(pid, None)
        if entry is None:
            return
        _, events, inodes = entry
        self._detach_events(events)
        for inode in inodes:
            obj = self._objects.get(inode)
            if obj is not None:
                obj.users.discard(pid)
                if not obj.users:                 # no process needs it: forget it
                    del self._objects[inode]
                    os.close(obj.fd)

    def _detach_events(self, events: list[int]) -> None:
        for ev in events:
            try:
                self._bpf.detach_uprobe(ev)
            except Exception as exc:              # detaching must never raise
                log.warning("memory: detaching uprobe fd %d failed: %s", ev, exc)
