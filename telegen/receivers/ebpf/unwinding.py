"""The CFI ``StackSource``: user stacks copied by BPF, unwound in user space.

With ``unwinding: auto`` or ``dwarf`` the BPF programs copy the user
registers and up to 16 KiB of stack per sample into the ``ustacks`` ring
(``capture_user_stack`` in bpf/telegen.h) and put a snapshot id (USNAP_BIT)
in the sample key's ``user_stack``. The ring callback only copies the bytes
into a bounded list; a named thread (every 200 ms) and the window reader
(before it reads a window) unwind them with the per-binary tables of
:mod:`telegen.unwind` and keep ``snapshot id -> addresses`` in a bounded
LRU, because BPF reuses an id for an identical stack seen later (dedupe).

A copy's dedupe key (its hash follows the copied bytes) is taken out of
BPF's ``usnap_seen`` when reusing the copy would spread a bad stack: the copy
was dropped (unwinding fell behind) or could not be unwound, its id was taken
again after the per-CPU counter wrapped, or — a Go stack keyed on its
frame-pointer chain (bpf/golabels.h) — it did not come out whole or holds
return addresses the key did not cover (``explained_by_chain``).

Frame-pointer stack ids (no USNAP_BIT: the copy failed, or a kernel stack)
go to the wrapped :class:`FramePointerStacks`. ``auto`` lets frame pointers
stand in for a frame without CFI; ``dwarf`` stops the stack there.

Tables are not waited for (#21): :meth:`TableCache.lookup` decodes small
CFI at once (libc: ~0.05 s) and queues a binary with big CFI (libpython,
libjvm) for the builder child; its frames use frame pointers meanwhile;
such a copy is counted
(``unwind_table_pending_copies``) and unwound again once its tables are
ready — within :data:`RETRY_S` — so that the snapshot id's result, which BPF
reuses for identical stacks, is the CFI one from then on. Before a window
is read (``begin``), copies still waiting may wait up to ``max_wait_s`` (at
most one window) for their tables, the builder running at the agent's
priority meanwhile. ``unwind_tables_pending`` is the gauge of tables queued
or being built.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache

from telegen.pdata import Mapping
from telegen.procinfo import ProcessCache, open_mapped
from telegen.procinfo.process import ProcessInfo
from telegen.receivers.ebpf.bpf_loader import USNAP_ENTRIES
from telegen.receivers.ebpf.code_ranges import HASH_CODE, CodeRanges
from telegen.receivers.ebpf.stacks import (
    TRUNCATED_MARK,
    FramePointerStacks,
    NeededRefs,
)
from telegen.receivers.ebpf.unwound import ERROR, FULL, TRUNCATED, Recent, UnwoundStacks
from telegen.unwind import AddressSpace, TableCache, UnwindTable, unwind
from telegen.unwind.golang import HASH_RAW, GoBinaries, explained_by_chain  # Go (#26)
from telegen.unwind.unwinder import UNMAPPED, SwitchContext
from telegen.unwind.vdso import vdso_table

log = logging.getLogger(__name__)

USNAP_BIT = 1 << 29                       # bpf/telegen.h
_HDR = struct.Struct("<IIIIQQQ")          # struct ustack_hdr (then data, then the key hash)
_U64 = struct.Struct("<Q")
_SEEN_KEY = struct.Struct("<IIQQQQ")      # struct usnap_key
PENDING_BYTES = 32 << 20                  # copies waiting to be unwound (<= 16 KiB each)
# unwound stacks kept for dedupe hits: BPF reuses a snapshot id only while it
# is in its usnap_seen LRU (USNAP_ENTRIES), so twice that is plenty
RESULTS = 2 * USNAP_ENTRIES
SPACES = 1024                             # per-process address spaces kept
REFRESH_NS = 200_000_000                  # maps older than this may be re-read on a miss,
REFRESH_EVERY_NS = 5_000_000_000          # but at most this often per process (JIT code)

# outcome of one unwound stack, as counted per sample: FULL, TRUNCATED, ERROR (unwound.py)
RETRY_S = 30.0                            # copies unwound without a pending table: retried
RETRY_COPIES = 1024                       # ... at most this many kept (<= 16 KiB each)


_CODE_KEY = HASH_RAW | HASH_CODE    # usnap_key.hash low bits of a code-word key

class CfiStacks:
    def __init__(self, fp: FramePointerStacks, processes: ProcessCache, *, name: str,
                 tables: TableCache | None = None,
                 wanted: Callable[[int], bool] = lambda pid: True,
                 on_error: Callable[[BaseException], None] | None = None,
                 telemetry: Any = None, max_wait_s: float = 1.0) -> None:
        self.name = name
        self._frame_pointers = name != "dwarf"
        self._fp = fp
        self._procs = processes
        self._wanted = wanted
        # not ``tables or``: an empty TableCache is falsy (len 0)
        self._tables = tables if tables is not None else TableCache()
        self._on_error = on_error or (lambda exc: log.warning("unwinding: %s", exc))
        # -- Go (#26): pclntab rules for Go code; the goroutine behind a sample on
        # Go's system stack, by snapshot id (set by receivers/ebpf/golabels.py)
        self.go_binaries = GoBinaries(self._tables.refusals)
        self.goroutine_context: Callable[[int], SwitchContext | None] = lambda snap_id: None
        self._seen: Any = None            # usnap_seen (BPF), to drop a Go chain key
        self.go_keys_dropped = 0
        self._code: CodeRanges | None = None    # usnap_ranges (BPF): code-word keys
        self.code_keys_dropped = 0
        self._keys: Recent[int, bytes] = Recent(RESULTS)     # snapshot id -> its key
        self.ids_reused = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._work_lock = threading.Lock()
        # written by the unwinder thread, read by the window thread (its own lock);
        # the addresses packed (#21): ~350 bytes an entry of ~30 frames, was ~1.5 kB
        self._results = UnwoundStacks(RESULTS)
        self._spaces: LRUCache[int, tuple[ProcessInfo, AddressSpace, int]] = LRUCache(SPACES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refreshed: LRUCache[int, int] = LRUCache(SPACES)
        # copies unwound while a table they needed was being built: (copy, first seen)
        # (with the goroutine behind a g0 copy: go_gstacks may have evicted it by then)
        self._retry: list[tuple[bytes, float, SwitchContext | None]] = []
        self._retry_generation = -1
        self._building = False       # set by _table_for while a space is made
        self._telemetry = telemetry
        self._max_wait_s = max_wait_s
        self.table_pending_copies = 0
        self._reported: dict[str, int] = {}   # counter name -> value already added
        self.dropped = 0          # copies dropped because unwinding fell behind
        processes.on_release(self.forget)
        self.unwound = 0
        self.errors = 0

    def forget(self, pids: list[int]) -> None:
        """Drop the address spaces of processes that exited (ProcessCache.on_release)."""
        with self._work_lock:
            for pid in pids:
                self._spaces.pop(pid, None)
                self._refreshed.pop(pid, None)
        if self._code is not None:
            self._code.forget(pids)

    # -- the ring ---------------------------------------------------------------------
    def attach(self, bpf: Any) -> None:
        """Open the ``ustacks`` ring (before the event thread starts polling)."""
        bpf[b"ustacks"].open_ring_buffer(self._on_copy)
        self._seen = bpf[b"usnap_seen"]
        self._code = CodeRanges(bpf[b"usnap_ranges"])

    def _on_copy(self, _ctx: object, data: int, size: int) -> None:
        try:
            raw = ctypes.string_at(data, size)
            with self._pending_lock:
                full = self._pending_bytes + len(raw) > PENDING_BYTES
                if not full:
                    self._pending.append(raw)
                    self._pending_bytes += len(raw)
            if full:
                # BPF hands this copy's id to every later sample of the same
                # stack: forget the key, or they would all lack a stack
                self.dropped += 1
                self._forget_key(raw)
        except Exception as exc:   # never raise into libbcc
            self._on_error(exc)

    def _not_reusable(self, raw: bytes, since: float | None) -> None:
        """A copy that could not be unwound at all (its process's maps not
        captured yet, an error): later samples of its stack make a new copy
        rather than reuse this one's id, which has no stack."""
        if since is None:
            self._forget_key(raw)

    def _forget_key(self, raw: bytes) -> None:
        """Remove a copy's dedupe key from BPF's ``usnap_seen``."""
        self._forget(_seen_key(raw))

    def _forget(self, key: bytes | None) -> None:
        if key is None or self._seen is None:
            return
        try:
            del self._seen[self._seen.Key.from_buffer_copy(key)]
        except (KeyError, ValueError, TypeError):
            pass          # evicted already

    def _claim_id(self, snap_id: int, raw: bytes) -> None:
        """A new copy took ``snap_id`` (ids wrap after 2^20 copies of a CPU):
        an older key still mapping to it in ``usnap_seen`` (a hot stack the
        LRU kept) would get this copy's stack, so it is removed."""
        key = _seen_key(raw)
        old = self._keys.get(snap_id)
        if old is not None and old != key:
            self.ids_reused += 1
            self._forget(old)
        if key is not None:
            self._keys.set(snap_id, key)

    # -- the unwinder thread ----------------------------------------------------------
    def start(self) -> None:
        self._tables.start_builder()
        self._thread = threading.Thread(target=self._run, name="ebpf-unwind", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout_s)
        self._tables.close()          # the background builder and its child

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.process_pending()
            except Exception as exc:
                self._on_error(exc)

    def process_pending(self) -> int:
        """Unwind every copy received so far; returns how many."""
        with self._work_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
                self._pending_bytes = 0
            retried = self._retry_ready()
            for raw, since, goroutine in retried:
                self._unwind_one(raw, since=since, goroutine=goroutine)
            for raw in batch:
                self._unwind_one(raw)
            return len(batch)

    def _retry_ready(self) -> list[tuple[bytes, float, SwitchContext | None]]:
        """The waiting copies to unwind again: all of them once a table was
        built since they waited (those still waiting for another table go
        back in line); none otherwise. Copies wait at most RETRY_S."""
        generation = self._tables.generation
        if not self._retry or generation == self._retry_generation:
            return []
        self._retry_generation = generation
        now = time.monotonic()
        ready = [r for r in self._retry if now - r[1] < RETRY_S]
        self._retry = []
        return ready

    def _unwind_one(self, raw: bytes, *, since: float | None = None,
                    goroutine: SwitchContext | None = None) -> None:
        snap_id, pid, _tid, length, ip, sp, bp = _HDR.unpack_from(raw, 0)
        end = _HDR.size + length
        key_hash = _U64.unpack_from(raw, end)[0] if len(raw) >= end + 8 else 0
        if since is None:
            self._claim_id(snap_id, raw)
        if not self._wanted(pid):          # sampled before it was classified unwanted
            self._result(snap_id, ((), ERROR))
            return
        try:
            stack = raw[_HDR.size:_HDR.size + length]
            space = self._space(pid)
            if space is None:
                self._result(snap_id, ((), ERROR))
                self.errors += 1
                self._not_reusable(raw, since)
                return
            fp = self._frame_pointers
            if since is None:                                  # Go (#26)
                goroutine = self.goroutine_context(snap_id)
            res = unwind(space, ip, sp, bp, stack, frame_pointers=fp, goroutine=goroutine)
            if res.reason == UNMAPPED and self._refresh(pid):
                space = self._space(pid)   # maps read at exec, before the libraries
                if space is not None:
                    res = unwind(space, ip, sp, bp, stack, frame_pointers=fp,
                                 goroutine=goroutine)
        except Exception as exc:
            self.errors += 1
            self._result(snap_id, ((), ERROR))
            log.debug("unwinding snapshot %x of pid %d failed: %s", snap_id, pid, exc)
            self._not_reusable(raw, since)
            return
        self.unwound += 1
        if key_hash and not key_hash & HASH_RAW and (
                not res.complete or not explained_by_chain(
                    res.addresses, ip, sp, bp, stack, key_hash, goroutine)):
            # a Go chain key whose stack needed more than the key covers (a
            # prologue, a signal frame), or that did not come out whole: one
            # such key stands for every sample in that call path (a hot loop:
            # thousands), so the next sample there is copied and unwound again
            self.go_keys_dropped += 1
            self._forget_key(raw)
        elif key_hash & _CODE_KEY == _CODE_KEY and (
                self._code is None or not self._code.covers(pid, res.addresses[1:])):
            # keyed on the code words, but a return address lies outside the code
            # ranges BPF hashed with (a library loaded since, a garbage unwind)
            self.code_keys_dropped += 1
            self._forget_key(raw)
            self._refresh(pid)     # maps read again (rate-limited): new ranges written
        elif key_hash and not res.complete and self._pending_tables(pid):
            # cut short because a table is still being built: the key would hand
            # the cut stack to every later sample with the same words (a hot loop)
            self._forget_key(raw)
        if self._pending_tables(pid) and len(self._retry) < RETRY_COPIES:
            if since is None:         # counted once, on its first unwind
                self.table_pending_copies += 1
            self._retry.append((raw, time.monotonic() if since is None else since, goroutine))
        if res.complete:
            self._result(snap_id, (res.addresses, FULL))
        else:
            self._result(snap_id, ((*res.addresses, TRUNCATED_MARK), TRUNCATED))

    def _result(self, snap_id: int, result: tuple[tuple[int, ...], str]) -> None:
        self._results.put(snap_id, *result)

    def _space(self, pid: int) -> AddressSpace | None:
        info = self._procs.get(pid)
        if info is None:
            return None
        hit = self._spaces.get(pid)
        if hit is not None and hit[0] is info and hit[2] in (-1, self._tables.generation):
            return hit[1]
        self._building = False
        generation = self._tables.generation
        space = AddressSpace(info.mappings, lambda m: self._table_for(pid, m),
                             lambda m: self.go_binaries.for_mapping(pid, m))   # Go (#26)
        if self._code is not None:
            self._code.write(pid, info.mappings)
        # made while a table was pending: made again once a table is ready
        self._spaces[pid] = (info, space, generation if self._building else -1)
        return space

    def _pending_tables(self, pid: int) -> bool:
        hit = self._spaces.get(pid)
        return hit is not None and hit[2] != -1

    def _refresh(self, pid: int) -> bool:
        """Re-read the maps of a live process whose copy is older than REFRESH_NS."""
        info = self._procs.get(pid, capture=False)
        now = time.time_ns()
        if info is None or info.exited or now - info.captured_ns < REFRESH_NS or \
                now - self._refreshed.get(pid, 0) < REFRESH_EVERY_NS:
            return False
        self._refreshed[pid] = now
        return self._procs.capture(pid) is not None

    def _table_for(self, pid: int, m: Mapping) -> UnwindTable | None:
        if m.file == "[vdso]":
            return vdso_table(pid, m, self._tables)
        mapped = open_mapped(pid, m.file, m.start, refusals=self._tables.refusals,
                             host_fallback=True, build_id=m.build_id)
        if mapped is None:          # exited: a table already built for this build-id
            return self._tables.known(m.build_id)
        with mapped:        # opened inside the process's root, by descriptor
            table = self._tables.lookup(mapped, m.build_id)    # never waits
        if table is None:
            self._building = True
        return table

    # -- StackSource ------------------------------------------------------------------
    def begin(self, seq: int) -> None:
        self._tables.new_window()
        try:
            self.process_pending()
            if self._retry and self._max_wait_s > 0 and \
                    not self._tables.wait_ready(self._max_wait_s):
                log.debug("unwind tables still pending after %.1fs: %d copies keep "
                          "frame pointers", self._max_wait_s, len(self._retry))
            self.process_pending()          # the copies whose tables are now ready
        except Exception as exc:
            self._on_error(exc)
        if self._telemetry is not None:
            self._telemetry.gauge("unwind_tables_pending").set(self._tables.pending)
            for name, total in (("unwind_table_pending_copies", self.table_pending_copies),
                                ("unwind_go_dedupe_keys_dropped", self.go_keys_dropped),
                                ("unwind_code_keys_dropped", self.code_keys_dropped),
                                ("unwind_code_ranges_errors",
                                 self._code.errors if self._code is not None else 0),
                                ("unwind_copies_dropped", self.dropped)):
                self._telemetry.counter(name).add(total - self._reported.get(name, 0))
                self._reported[name] = total
        self._fp.begin(seq)

    def addresses(self, seq: int, stack_id: int) -> tuple[int, ...] | None:
        if stack_id >= 0 and stack_id & USNAP_BIT:
            hit = self._results.get(stack_id)
            if hit is None or hit[1] == ERROR:
                return None
            return hit[0]
        return self._fp.addresses(seq, stack_id)

    def outcome(self, stack_id: int) -> str:
        """full / truncated / error for a snapshot id ("" for other ids)."""
        if stack_id < 0 or not stack_id & USNAP_BIT:
            return ""
        outcome = self._results.outcome(stack_id)
        return ERROR if outcome is None else outcome

    def end(self, seq: int, still_needed: NeededRefs) -> None:
        self._fp.end(seq, lambda: {r for r in still_needed() if not r[1] & USNAP_BIT})


def _seen_key(raw: bytes) -> bytes | None:
    """The ``usnap_seen`` key of a copy (``struct usnap_key``); None when BPF
    did not dedupe it (no key hash after the data)."""
    _snap, pid, _tid, length, ip, sp, bp = _HDR.unpack_from(raw, 0)
    end = _HDR.size + length
    key_hash = _U64.unpack_from(raw, end)[0] if len(raw) >= end + 8 else 0
    return _SEEN_KEY.pack(pid, 0, ip, sp, bp, key_hash) if key_hash else None
