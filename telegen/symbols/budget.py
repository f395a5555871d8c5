"""A CPU-time and memory budget for parsing one untrusted object file.

pyelftools walks whatever a profiled process put in its binaries. Section
sizes are checked before anything is read (:mod:`telegen.procinfo.elfheaders`),
and our own loops only move forward, but pyelftools has loops of its own
(line programs, CFI, abbreviation tables, DWARF 5 header arrays) whose cost
is chosen by the file. So every parse step of an object runs under a budget:

- a watchdog thread (``symbol-parse-budget``, polling every
  :data:`POLL_S` only while a step runs) reads the parsing *thread's* CPU clock
  (``pthread_getcpuclockid``) and the process's RSS;
- over the step's CPU time or memory growth it raises :class:`OverBudget`
  *inside* the parsing thread (``PyThreadState_SetAsyncExc``): delivered at
  the next bytecode, wherever pyelftools is, without any check in its code;
- the object is then rejected (:attr:`Budget.rejected`) and never parsed again.

Why in process rather than a child with rlimits: results (symbol tables,
per-CU DWARF indexes built lazily at look-up time) would have to cross a
process boundary on every cold look-up, and a fork of the agent (~170 MB
with libbcc) per object costs more than most parses. The watchdog bounds
every Python loop, ours or pyelftools'; what it cannot interrupt is one long
C call, and those are the allocations and inflations capped by the section
checks. Memory is the process's RSS growth during the step (other threads
allocate too: a coarse bound, overshoot ≤ one poll of allocation).

:class:`OverBudget` derives from ``BaseException`` so that the many
``except Exception`` of parsing code do not swallow it.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from telegen.procinfo.agent import rss_bytes

T = TypeVar("T")
POLL_S = 0.02


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on reading one object file (binary or debug file)."""

    max_section_bytes: int = 256 << 20   # declared/decompressed size of one section read
    max_dwarf_bytes: int = 768 << 20     # all DWARF sections of one file (held in memory)
    step_cpu_s: float = 5.0              # CPU time of one parse step (open, one CU, a table)
    object_cpu_s: float = 60.0           # CPU time of all steps of one object, refilled at
    object_refill_s: float = 600.0       # this pace (a long-lived binary's lazy steps go on)
    step_memory_bytes: int = 1 << 30     # RSS growth during one step


DEFAULT_LIMITS = ParseLimits()


class OverBudget(BaseException):
    reason = "over_budget"


class OverCpu(OverBudget):
    reason = "cpu_time"


class OverMemory(OverBudget):
    reason = "memory"


class Rejected(Exception):
    """The object is over its budget (or was refused): it is not parsed again."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Budget:
    """The CPU account of one object; :meth:`run` is one parse step.

    The account is a bucket of ``object_cpu_s`` refilled in
    ``object_refill_s``: the lazy steps of a big binary used for days (one
    DWARF unit indexed per cold address) go on, one object cannot take more
    than that share of a CPU. A step that would overdraw it is stopped and
    the object rejected for good."""

    def __init__(self, limits: ParseLimits = DEFAULT_LIMITS, name: str = "") -> None:
        self.limits = limits
        self.name = name
        self.used_cpu_s = 0.0
        self.rejected = ""
        self._local = threading.local()
        self._refilled = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        pace = self.limits.object_cpu_s / max(self.limits.object_refill_s, 1e-9)
        self.used_cpu_s = max(0.0, self.used_cpu_s - (now - self._refilled) * pace)
        self._refilled = now

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` within the step's budget; :class:`Rejected` when over
        it (then and on every later call)."""
        if self.rejected:
            raise Rejected(self.rejected, self.name)
        if getattr(self._local, "inside", False):     # a nested step: the outer one counts
            return fn(*args)
        self._refill()
        left = self.limits.object_cpu_s - self.used_cpu_s
        ident = threading.get_ident()
        clock = time.pthread_getcpuclockid(ident)
        start = time.clock_gettime(clock)
        watch = _Watch(ident, clock, start + min(self.limits.step_cpu_s, left),
                       self.limits.step_memory_bytes)
        self._local.inside = True
        try:
            try:
                _WATCHDOG.arm(watch)
                return fn(*args)
            finally:
                _disarm(watch)
                self._local.inside = False
                self.used_cpu_s += time.clock_gettime(clock) - start
        except OverBudget as exc:
            self.rejected = exc.reason
            raise Rejected(exc.reason, self.name) from None


def _disarm(watch: _Watch) -> None:
    try:
        _WATCHDOG.disarm(watch)
    except OverBudget:           # delivered inside disarm: at most once per watch
        _WATCHDOG.disarm(watch)
        raise


class _Watch:
    __slots__ = ("ident", "clock", "cpu_deadline", "memory", "rss_start", "fired")

    def __init__(self, ident: int, clock: int, cpu_deadline: float, memory: int) -> None:
        self.ident, self.clock, self.cpu_deadline = ident, clock, cpu_deadline
        self.memory = memory
        self.rss_start = -1      # read by the watchdog at its first look (not on this thread)
        self.fired = False


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.restype = ctypes.c_int


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._watches: set[_Watch] = set()
        self._thread: threading.Thread | None = None
        self.fired = 0

    def arm(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="symbol-parse-budget",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def disarm(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)
            if watch.fired:      # raised but maybe not delivered yet: cancel a pending one
                _set_async_exc(ctypes.c_ulong(watch.ident), None)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._watches:
                    self._wake.wait()
                for w in list(self._watches):
                    if not w.fired:
                        self._check(w)
            time.sleep(POLL_S)

    def _check(self, w: _Watch) -> None:
        try:
            over: type[OverBudget] | None = None
            rss = rss_bytes()
            if w.rss_start < 0:
                w.rss_start = rss
            if time.clock_gettime(w.clock) > w.cpu_deadline:
                over = OverCpu
            elif rss - w.rss_start > w.memory:
                over = OverMemory
        except OSError:          # the thread is gone
            self._watches.discard(w)
            return
        if over is not None:
            w.fired = True
            self.fired += 1
            _set_async_exc(ctypes.c_ulong(w.ident), ctypes.py_object(over))


_WATCHDOG = _Watchdog()
