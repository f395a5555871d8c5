"""A component's own named thread: started once, stopped by an Event that the
thread waits on, joined on shutdown (never from itself)."""

from __future__ import annotations

import threading
from collections.abc import Callable


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
