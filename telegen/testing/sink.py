"""A Consumer that keeps what it is given, for tests and the bench."""

from __future__ import annotations

import threading

from telegen.pdata import Profile, Profiles


class Sink:
    mutates_data = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: list[Profiles] = []
        self._arrived = threading.Condition(self._lock)

    def consume(self, profiles: Profiles) -> None:
        with self._lock:
            self._batches.append(profiles)
            self._arrived.notify_all()

    @property
    def batches(self) -> list[Profiles]:
        with self._lock:
            return list(self._batches)

    def profiles(self, name: str | None = None) -> list[Profile]:
        return [p for b in self.batches for p in b if name is None or p.name == name]

    def wait_for(self, count: int = 1, timeout_s: float = 30.0) -> bool:
        """Block until at least ``count`` batches arrived (or time out)."""
        with self._lock:
            return self._arrived.wait_for(lambda: len(self._batches) >= count, timeout_s)
