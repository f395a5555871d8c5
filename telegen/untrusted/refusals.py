"""What the agent refuses: one exception type, one counter, one log line per
kind of refusal (later ones at DEBUG, so a hostile peer cannot flood the log)."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from telegen.untrusted.text import shortened


class _Counter(Protocol):
    def add(self, n: int = 1) -> None: ...


class _Telemetry(Protocol):
    """What of a component's telemetry (``telegen.telemetry.ComponentTelemetry``)
    is used here; named structurally so the trust boundary imports nothing
    above it."""

    def counter(self, name: str, **labels: str) -> _Counter: ...


class Refused(Exception):
    """Untrusted input refused. ``reason`` is a short, fixed label
    (``too_large``, ``symlink``, ``nested_gzip``…) used as a metric label;
    ``detail`` is free text for the log (never a metric label)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Refusals:
    """Counts refusals of one component as ``refused_inputs{source,reason}``
    and logs the first of each (source, reason) as a warning."""

    def __init__(self, telemetry: _Telemetry | None, logger: logging.Logger) -> None:
        self._telemetry = telemetry
        self._log = logger
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}

    def note(self, source: str, reason: str, detail: str = "") -> None:
        key = (source, reason)
        with self._lock:
            first = key not in self.counts
            self.counts[key] = self.counts.get(key, 0) + 1
        if self._telemetry is not None:
            self._telemetry.counter("refused_inputs", source=source, reason=reason).add()
        level = logging.WARNING if first else logging.DEBUG
        self._log.log(level, "refused %s (%s)%s%s", source, reason, ": " if detail else "",
                      shortened(detail), extra={"refused": key})

    def note_exc(self, source: str, exc: Refused) -> None:
        self.note(source, exc.reason, exc.detail)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())
