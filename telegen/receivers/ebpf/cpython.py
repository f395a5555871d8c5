"""CPython processes for the BPF frame walker (#22, bpf/cpython.h): who is
registered, and their Python frames merged into native stacks.

Registration: ``seen(pid)`` (the first sample of a process) queues the pid
for a worker thread that asks :func:`telegen.interpreters.cpython.detect`
whether it runs CPython; if so its ``struct py_proc`` goes into
``py_procs`` and a :class:`~telegen.interpreters.cpython.CodeReader` is kept
for it. ``exited(pid)`` removes both; ``exec(pid)`` starts over.
``py_procs[0]`` holds the walker's settings (the task_struct offset of the
thread pointer, from BTF).

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
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from telegen.interpreters.cpython import CodeReader, detect
from telegen.interpreters.cpython.offsets import FRAME_OWNED_BY_CSTACK
from telegen.pdata import Frame, FrameKind, Line
from telegen.receivers.ebpf.frames import TRUNCATED
from telegen.receivers.ebpf.keys import RawKey
from telegen.receivers.ebpf.stats import StatDeltas
from telegen.untrusted import Refusals

log = logging.getLogger(__name__)

# bpf/cpython.h
PY_MAX_FRAMES = 64
PY_MAX_PROCS = 4096
PY_TRUNCATED, PY_FAULT = 1, 2
PY_INSTR_BAD = 0xFFFFFFFF
SETTINGS_KEY = 0
STAT_NAMES = ("samples", "stacks", "no_thread", "no_frame", "truncated", "fault",
              "collision", "full", "cache_hit", "no_fsbase")
QUEUE_SIZE = 1024           # pending registrations; beyond, a process is skipped (counted)
RETRY_AFTER_S = (0.5, 2.0)  # a process not (yet) seen as CPython is looked at again
RETRY_TICK_S = 0.25
DECODED_WINDOWS = 3         # windows whose decoded py_stacks entries are kept


class CPyFrame(ctypes.Structure):
    """Mirror of ``struct py_frame``."""

    _fields_ = [("code", ctypes.c_uint64), ("instr", ctypes.c_uint32),
                ("owner", ctypes.c_uint32)]


class CPyStack(ctypes.Structure):
    """Mirror of ``struct py_stack``."""

    _fields_ = [("hash", ctypes.c_uint64), ("pid", ctypes.c_uint32),
                ("depth", ctypes.c_uint16), ("status", ctypes.c_uint16),
                ("frames", CPyFrame * PY_MAX_FRAMES)]


class PyRuns(NamedTuple):
    runs: tuple[tuple[Frame, ...], ...]    # leaf first; one per eval call, each leaf first
    outcome: str                           # "" or why the frames are not usable


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


def merge_runs(native: tuple[Frame, ...], runs: tuple[tuple[Frame, ...], ...],
               in_eval: Callable[[int], bool]) -> tuple[tuple[Frame, ...], bool]:
    """Native frames with eval frames replaced by the runs; True when every
    run met one eval frame and no eval frame was left."""
    out: list[Frame] = []
    used, exact = 0, True
    for frame in native:
        if frame.kind is FrameKind.NATIVE and in_eval(frame.address):
            if used < len(runs):
                out.extend(runs[used])
                used += 1
                continue
            exact = False
        out.append(frame)
    if used < len(runs):
        exact = False
        rest = [f for run in runs[used:] for f in run]
        at = len(out) - 1 if out and out[-1] is TRUNCATED else len(out)
        out[at:at] = rest
    return tuple(out), exact


class PythonFrames:
    """The receiver's side of bpf/cpython.h."""

    def __init__(self, table: Callable[[str], Any], *, fsbase_offset: int,
                 telemetry: Any, refusals: Refusals | None = None,
                 detector: Callable[..., Any] = detect) -> None:
        self._procs_map = table("py_procs")
        self._stacks_map = table("py_stacks")
        self._telemetry = telemetry
        self._refusals = refusals
        self._detect = detector
        self._readers: dict[int, CodeReader] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, int]] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ebpf-cpython", daemon=True)
        self._retry: dict[int, tuple[float, int]] = {}        # pid -> (due, attempt)
        self._decoded: dict[int, dict[int, PyRuns]] = {}      # stack_seq -> id -> runs
        self._merged: dict[tuple[Any, ...], tuple[tuple[Frame, ...], str]] = {}
        # (pid, code, instr) -> frame, this window: most stacks differ only in a
        # leaf's instruction, so each frame is read once per window, not per
        # stack (names are as of the window's read either way)
        self._frames: dict[tuple[int, int, int], Frame | None] = {}
        self._outcomes: dict[str, int] = {}       # samples per merge outcome, this window
        self._stats = StatDeltas(lambda: table("py_stats"), STAT_NAMES)
        settings = self._procs_map.Leaf()
        ctypes.memset(ctypes.addressof(settings), 0, ctypes.sizeof(settings))
        settings.runtime = fsbase_offset
        self._procs_map[self._procs_map.Key(SETTINGS_KEY)] = settings

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
                what, pid = self._queue.get(timeout=RETRY_TICK_S)
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
        value = self._procs_map.Leaf.from_buffer_copy(bytes(found.proc_struct()))
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
        """``native`` with the sample's Python frames merged in (memoized)."""
        memo = (key.pid, key.stack_seq, key.py_stack, native)
        hit = self._merged.get(memo)
        if hit is None:
            hit = self._merge(key, native)
            self._merged[memo] = hit
        frames, outcome = hit
        self._outcomes[outcome] = self._outcomes.get(outcome, 0) + samples
        return frames

    def _merge(self, key: RawKey, native: tuple[Frame, ...]) -> tuple[tuple[Frame, ...], str]:
        with self._lock:
            reader = self._readers.get(key.pid)
        if reader is None:
            return native, "not_registered"
        runs = self._runs(key, reader)
        if runs.outcome:
            return native, runs.outcome
        merged, exact = merge_runs(native, runs.runs, reader.process.in_eval)
        return merged, "merged" if exact else "partial"

    def _runs(self, key: RawKey, reader: CodeReader) -> PyRuns:
        bucket = self._decoded.setdefault(key.stack_seq, {})
        hit = bucket.get(key.py_stack)
        if hit is None:
            hit = bucket[key.py_stack] = self._decode(key, reader)
        return hit

    def _decode(self, key: RawKey, reader: CodeReader) -> PyRuns:
        try:
            raw = self._stacks_map[self._stacks_map.Key(key.py_stack)]
        except KeyError:
            return PyRuns((), "expired")
        stack = CPyStack.from_buffer(raw) if ctypes.sizeof(raw) == ctypes.sizeof(CPyStack) \
            else CPyStack.from_buffer_copy(bytes(raw))
        if stack.pid != key.pid or not 0 < stack.depth <= PY_MAX_FRAMES:
            return PyRuns((), "expired")
        version = reader.process.version
        frames: list[tuple[Frame | None, int]] = []
        for i in range(stack.depth):
            f = stack.frames[i]
            if version >= 312 and f.owner == FRAME_OWNED_BY_CSTACK:
                frames.append((None, f.owner))
                continue
            if version >= 311:
                instr = 0 if f.instr == PY_INSTR_BAD else f.code + f.instr
            else:
                instr = f.instr
            memo = (key.pid, f.code, instr)
            if memo in self._frames:
                frame = self._frames[memo]
            else:
                line = reader.line(f.code, instr)
                frame = None if line is None else Frame(FrameKind.PYTHON, lines=(
                    Line(line.function, line.file, line.line, start_line=line.start_line),))
                self._frames[memo] = frame
            if frame is None:
                return PyRuns((), "unresolved")
            frames.append((frame, f.owner))
        runs = tuple(tuple(r) for r in split_runs(version, frames))
        if not runs:
            return PyRuns((), "unresolved")
        if stack.status & (PY_TRUNCATED | PY_FAULT):
            self._count("ebpf_python_stacks_incomplete", 1,
                        reason="truncated" if stack.status & PY_TRUNCATED else "fault")
        return PyRuns(runs, "")

    # -- per window ---------------------------------------------------------------------
    def window(self) -> dict[str, int]:
        """Called once per window: the walker's counters, memos pruned."""
        stats = self._stats.delta()
        for name, n in stats.items():
            if n and name not in ("samples", "stacks", "cache_hit"):
                self._count("ebpf_python_walks", n, result=name)
        if stats.get("stacks"):
            self._count("ebpf_python_walks", stats["stacks"], result="frames")
        for seq in sorted(self._decoded)[:-DECODED_WINDOWS]:
            del self._decoded[seq]
        self._merged.clear()
        self._frames.clear()
        outcomes, self._outcomes = self._outcomes, {}
        for outcome, n in outcomes.items():
            self._count("ebpf_python_samples", n, outcome=outcome)
        return stats

    def _count(self, name: str, n: int = 1, **labels: str) -> None:
        if self._telemetry is not None:
            self._telemetry.counter(name, **labels).add(n)
