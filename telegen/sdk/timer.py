"""A POSIX timer that sends a signal to one thread (Linux, through ctypes).

The standard library's ``signal.setitimer`` is process-wide: its signal can
land in any thread and its clocks are either real time (SIGALRM, which
applications use) or process CPU time (no ticks while the process is idle).
``timer_create`` with ``SIGEV_THREAD_ID`` on ``CLOCK_MONOTONIC`` sends
``signum`` to one thread at a wall-clock rate, which is what the sampler needs:
only the main thread is interrupted, and CPython runs the Python-level handler
there, between two bytecodes, with the GIL already held. Hand-written with
ctypes because nothing in the standard library or on PyPI for 3.8+ offers a
per-thread timer without a C extension.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_CLOCK_MONOTONIC = 1
_SIGEV_THREAD_ID = 4


class _SigEvent(ctypes.Structure):
    # struct sigevent (64 bytes on Linux): value, signo, notify, then a union
    # whose first member for SIGEV_THREAD_ID is the target thread id
    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int), ("sigev_tid", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    for find in (lambda: None, lambda: ctypes.util.find_library("rt")):  # glibc >= 2.34: libc
        try:
            lib = ctypes.CDLL(find(), use_errno=True)
            lib.timer_create.argtypes = [ctypes.c_int, ctypes.POINTER(_SigEvent),
                                         ctypes.POINTER(ctypes.c_void_p)]
            lib.timer_settime.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                          ctypes.POINTER(_ITimerSpec), ctypes.c_void_p]
            lib.timer_delete.argtypes = [ctypes.c_void_p]
            return lib
        except (OSError, AttributeError):
            continue
    return None


class ThreadTimer:
    """Sends ``signum`` to thread ``tid`` (a native thread id) every
    ``interval`` seconds of wall time, until :meth:`delete`."""

    def __init__(self, tid: int, signum: int, interval: float) -> None:
        lib = _libc()
        if lib is None:
            raise OSError("no timer_create on this platform")
        self._lib = lib
        self._id: ctypes.c_void_p | None = None
        ev = _SigEvent(sigev_signo=signum, sigev_notify=_SIGEV_THREAD_ID, sigev_tid=tid)
        timer_id = ctypes.c_void_p()
        if lib.timer_create(_CLOCK_MONOTONIC, ctypes.byref(ev), ctypes.byref(timer_id)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timer_create: {os.strerror(err)}")
        self._id = timer_id
        try:
            self.set(interval)
        except OSError:
            self.delete()
            raise

    def set(self, interval: float) -> None:
        """Fire every ``interval`` seconds from now on (0: pause)."""
        if self._id is None:
            return
        sec, frac = divmod(interval, 1.0)
        period = _TimeSpec(int(sec), int(frac * 1e9))
        if self._lib.timer_settime(self._id, 0, ctypes.byref(_ITimerSpec(period, period)),
                                   None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timer_settime: {os.strerror(err)}")

    def delete(self) -> None:
        """Stop the timer (idempotent). No signal is sent after this returns."""
        if self._id is not None:
            self._lib.timer_delete(self._id)
            self._id = None


class MainThreadTicks:
    """``handler(signum, frame)`` run in the main thread every ``interval``
    seconds, from a :class:`ThreadTimer` sending SIGPROF to it.

    :meth:`install` returns None (and says why in ``reason``) when this cannot
    be done safely: not called from the main thread, not Linux, or SIGPROF
    already has a handler (another profiler's: it is left alone). System
    calls interrupted by the signal are restarted (``siginterrupt(False)``;
    Python retries the rest, PEP 475). The timer is deleted at exit, before
    the interpreter resets SIGPROF to its default action (terminate)."""

    reason = ""

    def __init__(self, handler: object, timer: ThreadTimer) -> None:
        self.handler = handler
        self._timer: ThreadTimer | None = timer

    @classmethod
    def install(cls, handler: object, interval: float) -> MainThreadTicks | None:
        import atexit
        import signal
        import threading

        sig = getattr(signal, "SIGPROF", None)
        if threading.current_thread() is not threading.main_thread():
            cls.reason = "not started from the main thread"
            return None
        if sig is None or _libc() is None:
            cls.reason = "no per-thread timers on this platform"
            return None
        if signal.getsignal(sig) not in (signal.SIG_DFL, None):
            cls.reason = "SIGPROF already has a handler (another profiler?)"
            return None
        signal.signal(sig, handler)                     # type: ignore[arg-type]
        signal.siginterrupt(sig, False)
        try:
            timer = ThreadTimer(threading.get_native_id(), sig, interval)
        except OSError as exc:
            signal.signal(sig, signal.SIG_DFL)
            cls.reason = str(exc)
            return None
        ticks = cls(handler, timer)
        atexit.register(ticks.delete)
        return ticks

    def forget(self) -> None:
        """In a forked child, where the timer does not exist (POSIX timers are
        not inherited): SIGPROF back to its default, nothing deleted."""
        import signal

        self._timer = None
        if not self.replaced():
            signal.signal(signal.SIGPROF, signal.SIG_DFL)

    def replaced(self) -> bool:
        """Someone else set a SIGPROF handler since (ours no longer runs)."""
        import signal

        return signal.getsignal(signal.SIGPROF) is not self.handler

    def delete(self) -> None:
        """Stop the ticks (idempotent; from any thread). From the main thread
        SIGPROF goes back to its default; from another thread the handler
        stays installed (only the main thread may change it) but no signal
        comes any more."""
        import signal
        import threading

        if self._timer is None:
            return
        self._timer.delete()
        self._timer = None
        if threading.current_thread() is threading.main_thread() and not self.replaced():
            signal.signal(signal.SIGPROF, signal.SIG_DFL)
