"""A named thread that calls a function every interval until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Ticker:
    def __init__(self, name: str, interval_s: float, fn: Callable[[], None],
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._fn = fn
        self._interval = interval_s
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._fn()
            except Exception as exc:  # never let a tick kill the thread
                if self._on_error:
                    self._on_error(exc)
                else:
                    log.exception("%s: tick failed", self._thread.name)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def stopped(self) -> threading.Event:
        return self._stop
