"""CPython processes for the BPF frame walker (#22, bpf/cpython.h): who is
registered, and their Python frames merged into native stacks.

Registration: ``seen(pid)`` (the first sample of a process) queues the pid
for a worker thread that asks :func:`telegen.interpreters.cpython.detect`
whether it runs CPython; if so its ``struct py_proc`` goes into
``py_procs`` and a :class:`~telegen.interpreters.cpython.CodeReader` is kept
for it. ``exited(pid)`` removes both; ``exec(pid)`` starts over.
Each entry carries the task_struct offset of the thread pointer (from the
kernel's BTF) beside the process's own offsets.

Merging (``merge``): a sample's ``py_stack`` id names its Python frames in
``py_stacks``, leaf first. They are cut into one run per C-level call of
``_PyEval_EvalFrameDefault`` (3.8-3.10: one frame per call; 3.11: a run
ends at an ``is_entry`` frame; 3.12+: at the C-stack shim frame, which is
dropped) and the i-th run from the leaf replaces the i-th native frame from
the leaf that lies in ``_PyEval_EvalFrameDefault``: C called from Python sits
under its Python caller, Python called back from C above that C. Runs left
over (the native unwinding stopped inside libpython) go to the root end.
A frame whose code object cannot be read (not CPython after all, torn or
reused memory) drops all Python frames of the sample: native frames only,
counted in ``ebpf_python_samples{outcome}`` per sample.

Cost: a ``py_stacks`` id is decoded once and kept until it has not been
used for KEEP_WINDOWS windows. In each window it is used its entry is read again (the id
must still hold the same frames: ``hash``) and each code object it names is
checked once (one read of its head, shared by every stack): the names and
lines stay those of the code objects as they are now, at one read per code
object per window instead of one per frame. Merging splices the runs into
the native frames at the positions of the eval frames (one pass over the
native stack), memoized by content (pid, id, native frames) for two windows
while the id's runs are the ones checked. The maps are read with one bpf()
call each (cpython_maps.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from telegen.interpreters.cpython import CodeEntry, CodeReader, detect
from telegen.interpreters.cpython.offsets import FRAME_OWNED_BY_CSTACK
from telegen.pdata import Frame, FrameKind, Line
from telegen.receivers.ebpf.cpython_maps import (
    PY_FAULT,
    PY_INSTR_BAD,
    PY_MAX_FRAMES,
    PY_TRUNCATED,
    CPyStack,
    StackReader,
    WalkerStats,
)
from telegen.receivers.ebpf.frames import TRUNCATED
from telegen.receivers.ebpf.keys import RawKey
from telegen.untrusted import Refusals

log = logging.getLogger(__name__)

# bpf/cpython.h
PY_MAX_PROCS = 4096
QUEUE_SIZE = 1024           # pending registrations; beyond, a process is skipped (counted)
RETRY_AFTER_S = (0.5, 2.0)  # a process not (yet) seen as CPython is looked at again
PY_STACK_ENTRIES = 4096     # py_stacks: ids that can be live at once
KEEP_WINDOWS = 8            # a decoded id unused this long is forgotten
IDLE_WAIT_S = 5.0           # with no retry due, the registration thread sleeps until an event


class PyRuns(NamedTuple):
    runs: tuple[tuple[Frame, ...], ...]    # leaf first; one per eval call, each leaf first
    outcome: str                           # "" or why the frames are not usable


class Decoded(NamedTuple):
    """A ``py_stacks`` entry named: valid while the entry holds the same frames
    (``hash``) and every code object it names is still the same one."""

    hash: int
    codes: tuple[tuple[int, CodeEntry], ...]   # (address, entry it was named from)
    runs: PyRuns


Merged = tuple[PyRuns, tuple[Frame, ...], str]     # the runs merged, the frames, the outcome

EXPIRED = Decoded(0, (), PyRuns((), "expired"))     # the id no longer holds this pid's frames


def split_runs(version: int, frames: list[tuple[Frame | None, int]]) -> list[list[Frame]]:
    """(frame, owner byte) leaf first -> runs of one C-level eval call each.
    A ``None`` frame is a 3.12+ shim (ends a run, not shown)."""
    runs: list[list[Frame]] = []
    current: list[Frame] = []
    for frame, owner in frames:
        if frame is None:
            if current:
                runs.append(current)
            current = []
            continue
        current.append(frame)
        if version < 311 or (version == 311 and owner):
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def eval_positions(native: tuple[Frame, ...], ranges: tuple[tuple[int, int], ...]) -> list[int]:
    """Indexes of the native frames inside ``_PyEval_EvalFrameDefault`` (its
    range and, when the binary has one, its ``.cold`` part): one pass. Only
    native frames have a user-space address; markers are at 0, kernel frames
    far above any user range, so a range that starts above 0 needs no kind test."""
    if len(ranges) == 1:
        (lo, hi), = ranges
        if lo > 0:
            return [i for i, f in enumerate(native) if lo <= f.address < hi]
    elif len(ranges) == 2:
        (lo, hi), (lo2, hi2) = ranges
        if lo > 0 and lo2 > 0:
            return [i for i, f in enumerate(native)
                    if lo <= (a := f.address) < hi or lo2 <= a < hi2]
    return [i for i, f in enumerate(native) if f.kind is FrameKind.NATIVE
            and any(lo <= f.address < hi for lo, hi in ranges)]


def splice_runs(native: tuple[Frame, ...], runs: tuple[tuple[Frame, ...], ...],
                positions: list[int]) -> tuple[tuple[Frame, ...], bool]:
    """The i-th run replaces the native frame at ``positions[i]``; eval frames
    without a run stay, runs without an eval frame go to the root end (before
    a final [truncated] marker)."""
    if len(positions) == 1 and len(runs) == 1:          # one eval call: most stacks
        at = positions[0]
        return native[:at] + runs[0] + native[at + 1:], True
    out: list[Frame] = []
    start = 0
    for at, run in zip(positions, runs, strict=False):   # the shorter decides
        out.extend(native[start:at])
        out.extend(run)
        start = at + 1
    out.extend(native[start:])
    if len(runs) > len(positions):
        rest = [f for run in runs[len(positions):] for f in run]
        at = len(out) - 1 if out and out[-1] is TRUNCATED else len(out)
        out[at:at] = rest
    return tuple(out), len(runs) == len(positions)


class PythonFrames:
    """The receiver's side of bpf/cpython.h."""

    def __init__(self, table: Callable[[str], Any], *, fsbase_offset: int,
                 telemetry: Any, refusals: Refusals | None = None,
                 detector: Callable[..., Any] = detect) -> None:
        self._procs_map = table("py_procs")
        self._stacks = StackReader(table("py_stacks"))
        self._telemetry = telemetry
        self._refusals = refusals
        self._detect = detector
        self._readers: dict[int, CodeReader] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, int]] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ebpf-cpython", daemon=True)
        self._retry: dict[int, tuple[float, int]] = {}        # pid -> (due, attempt)
        # (pid, py_stack id) -> decoded, checked this window
        self._decoded: dict[tuple[int, int], Decoded] = {}
        # ... and each one's (decoded, window it was last used in), for KEEP_WINDOWS:
        # an id seen now and then is checked again (one map read, its code
        # objects' heads), not decoded again (its frames named, interned)
        self._kept: dict[tuple[int, int], tuple[Decoded, int]] = {}
        self._window_no = 0
        # (pid, code address) -> the code object as checked this window (None: not one)
        self._checked: dict[tuple[int, int], CodeEntry | None] = {}
        # (pid, code address, instr) -> (code entry, frame), this window and the one before
        self._frames: dict[tuple[int, int, int], tuple[CodeEntry, Frame]] = {}
        self._frames_before: dict[tuple[int, int, int], tuple[CodeEntry, Frame]] = {}
        # (pid, py_stack id, native frames) -> (the id's runs, merged, outcome): this
        # window and the one before
        self._merged: dict[tuple[int, int, tuple[Frame, ...]], Merged] = {}
        self._merged_before: dict[tuple[int, int, tuple[Frame, ...]], Merged] = {}
        self._outcomes: dict[str, int] = {}       # samples per merge outcome, this window
        self._stats = WalkerStats(table("py_stats"))
        # a u16 in struct py_offsets; 0 (unknown) makes every walk stop at once, counted
        self._fsbase_offset = fsbase_offset if 0 < fsbase_offset < 0xFFFF else 0

    # -- lifecycle (event thread) -------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(("stop", 0))
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join(2.0)

    def seen(self, pid: int) -> None:
        self._enqueue("seen", pid)

    def exec(self, pid: int) -> None:
        """A new image: forgotten now; its next sample is a new process to BPF
        (proc.bpf.c clears `seen`), which registers it again."""
        self._enqueue("exit", pid)

    def exited(self, pid: int) -> None:
        self._enqueue("exit", pid)

    def _enqueue(self, what: str, pid: int) -> None:
        try:
            self._queue.put_nowait((what, pid))
        except queue.Full:
            self._count("ebpf_python_processes", result="queue_full")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                what, pid = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                what, pid = "", 0
            try:
                if what == "exit":
                    self._retry.pop(pid, None)
                    self._forget(pid)
                elif what == "seen":
                    self._register(pid, attempt=0)
                self._retry_due()
            except Exception:           # one odd process must not stop registration
                log.exception("cpython: handling %s of %d failed", what, pid)
                self._count("ebpf_python_processes", result="error")

    def _wait_s(self) -> float:
        """Until the next retry is due (an idle agent's thread does not wake
        4 times a second for nothing: that was ~0.05% of a core here)."""
        if not self._retry:
            return IDLE_WAIT_S
        due = min(d for d, _ in self._retry.values())
        return min(IDLE_WAIT_S, max(0.01, due - time.monotonic()))

    def _retry_due(self) -> None:
        now = time.monotonic()
        for pid, (due, attempt) in list(self._retry.items()):
            if due <= now:
                del self._retry[pid]
                self._register(pid, attempt=attempt)

    def _register(self, pid: int, *, attempt: int) -> None:
        if pid in self._readers:
            return
        found = self._detect(pid, refusals=self._refusals)
        if found is None:
            # the first sample of a process may come before ld.so mapped
            # libpython (off-CPU samples while exec loads): look again later
            if attempt < len(RETRY_AFTER_S) and len(self._retry) < QUEUE_SIZE:
                self._retry[pid] = (time.monotonic() + RETRY_AFTER_S[attempt], attempt + 1)
            return
        if len(self._readers) >= PY_MAX_PROCS - 1:
            self._count("ebpf_python_processes", result="too_many")
            return
        proc = found.proc_struct()
        proc.off.task_fsbase = self._fsbase_offset
        value = self._procs_map.Leaf.from_buffer_copy(bytes(proc))
        with self._lock:
            self._readers[pid] = CodeReader(found, refusals=self._refusals)
        self._procs_map[self._procs_map.Key(pid)] = value
        self._count("ebpf_python_processes", result="registered",
                    version=f"{found.version // 100}.{found.version % 100}")

    def _forget(self, pid: int) -> None:
        with self._lock:
            known = self._readers.pop(pid, None)
        if known is None:
            return
        try:
            del self._procs_map[self._procs_map.Key(pid)]
        except KeyError:
            pass

    def registered(self) -> set[int]:
        with self._lock:
            return set(self._readers)

    # -- frames (window thread) -----------------------------------------------------------
    def merge(self, key: RawKey, native: tuple[Frame, ...], samples: int) -> tuple[Frame, ...]:
        """``native`` with the sample's Python frames merged in. Memoized by
        content (pid, ``py_stack`` id, native frames: frames are interned, so a
        stack hashes and compares by identity) for two windows, while the id's
        decoded runs stay the same object (checked each window): a steady
        workload's samples come back to merges made before."""
        reader = self._readers.get(key.pid)     # one dict look-up: atomic, no lock needed
        if reader is None:
            frames, outcome = native, "not_registered"
        else:
            runs = self._runs(key, reader)
            if runs.outcome:
                frames, outcome = native, runs.outcome
            else:
                memo = (key.pid, key.py_stack, native)
                hit = self._merged.get(memo)
                if hit is None or hit[0] is not runs:
                    hit = self._merged_before.get(memo)
                    if hit is None or hit[0] is not runs:
                        merged, exact = splice_runs(
                            native, runs.runs, eval_positions(native, reader.process.eval_ranges))
                        hit = (runs, merged, "merged" if exact else "partial")
                    self._merged[memo] = hit
                _, frames, outcome = hit
        self._outcomes[outcome] = self._outcomes.get(outcome, 0) + samples
        return frames

    def _runs(self, key: RawKey, reader: CodeReader) -> PyRuns:
        memo = (key.pid, key.py_stack)
        hit = self._decoded.get(memo)
        if hit is not None:
            return hit.runs
        stack = self._stacks.read(key.py_stack)
        if stack is None or stack.pid != key.pid or not 0 < stack.depth <= PY_MAX_FRAMES:
            hit = EXPIRED
        else:
            kept = self._kept.get(memo)
            old = kept[0] if kept is not None else None
            if old is not None and old.hash == stack.hash and all(
                    self._check(key.pid, reader, addr) is code for addr, code in old.codes):
                hit = old
            else:
                hit = self._decode(key.pid, stack, reader)
            if not hit.runs.outcome:
                if len(self._kept) >= PY_STACK_ENTRIES and memo not in self._kept:
                    self._kept.clear()          # more than the map holds: start over
                self._kept[memo] = (hit, self._window_no)
        self._decoded[memo] = hit
        return hit.runs

    def _check(self, pid: int, reader: CodeReader, addr: int) -> CodeEntry | None:
        """The code object at ``addr``, read once per window."""
        memo = (pid, addr)
        if memo in self._checked:
            return self._checked[memo]
        code = self._checked[memo] = reader.code(addr)
        return code

    def _decode(self, pid: int, stack: CPyStack, reader: CodeReader) -> Decoded:
        version = reader.process.version
        frames: list[tuple[Frame | None, int]] = []
        codes: dict[int, CodeEntry] = {}
        for i in range(stack.depth):
            f = stack.frames[i]
            if version >= 312 and f.owner == FRAME_OWNED_BY_CSTACK:
                frames.append((None, f.owner))
                continue
            code = self._check(pid, reader, f.code)
            if code is None:
                return Decoded(stack.hash, (), PyRuns((), "unresolved"))
            codes[f.code] = code
            if version >= 311:
                instr = 0 if f.instr == PY_INSTR_BAD else f.code + f.instr
            else:
                instr = f.instr
            frames.append((self._frame(pid, reader, code, f.code, instr), f.owner))
        runs = tuple(tuple(r) for r in split_runs(version, frames))
        if not runs:
            return Decoded(stack.hash, (), PyRuns((), "unresolved"))
        if stack.status & (PY_TRUNCATED | PY_FAULT):
            self._count("ebpf_python_stacks_incomplete", 1,
                        reason="truncated" if stack.status & PY_TRUNCATED else "fault")
        return Decoded(stack.hash, tuple(codes.items()), PyRuns(runs, ""))

    def _frame(self, pid: int, reader: CodeReader, code: CodeEntry, addr: int,
               instr: int) -> Frame:
        memo = (pid, addr, instr)
        hit = self._frames.get(memo) or self._frames_before.get(memo)
        if hit is None or hit[0] is not code:
            line = reader.line_in(code, addr, instr)
            hit = (code, Frame(FrameKind.PYTHON, lines=(
                Line(line.function, line.file, line.line, start_line=line.start_line),)))
        self._frames[memo] = hit
        return hit[1]

    # -- per window ---------------------------------------------------------------------
    def window(self) -> dict[str, int]:
        """Called once per window: the walker's counters, memos pruned."""
        stats = self._stats.delta()
        for name, n in stats.items():
            if n and name not in ("samples", "stacks", "cache_hit"):
                self._count("ebpf_python_walks", n, result=name)
        if stats.get("stacks"):
            self._count("ebpf_python_walks", stats["stacks"], result="frames")
        self._decoded = {}
        self._window_no += 1
        if self._window_no % KEEP_WINDOWS == 0:     # kept KEEP_WINDOWS to 2x that
            oldest = self._window_no - KEEP_WINDOWS
            self._kept = {k: v for k, v in self._kept.items() if v[1] >= oldest}
        self._frames_before, self._frames = self._frames, {}
        self._checked.clear()
        self._merged_before, self._merged = self._merged, {}
        outcomes, self._outcomes = self._outcomes, {}
        for outcome, n in outcomes.items():
            self._count("ebpf_python_samples", n, outcome=outcome)
        return stats

    def _count(self, name: str, n: int = 1, **labels: str) -> None:
        if self._telemetry is not None:
            self._telemetry.counter(name, **labels).add(n)
