"""A component's own named thread: started once, stopped by an Event that the
thread waits on, joined on shutdown (never from itself)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any


class Worker:
    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.stopping = threading.Event()    # the target waits on this
        self._name = name
        self._target = target
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._target, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (idempotent); ``join`` waits for it."""
        self.stopping.set()

    def join(self, timeout_s: float = 30.0) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)


def guarded(log: logging.Logger, owner: str, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` in a component's thread: an exception is logged with
    ``owner`` and the step's name, never lets the step end the thread."""
    try:
        fn(*args)
    except Exception:
        log.exception("%s: %s failed", owner, getattr(fn, "__name__", fn))
