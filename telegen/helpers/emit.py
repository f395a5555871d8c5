"""How a receiver hands profiles on: one place that counts accepted and
refused samples (Collector metric names) and logs a refusal, never raising
into the receiver's thread."""

from __future__ import annotations

from collections.abc import Sequence

from telegen.component import Consumer, CreateSettings
from telegen.pdata import Profile, Profiles


class Emitter:
    def __init__(self, settings: CreateSettings, next_consumer: Consumer) -> None:
        self._next = next_consumer
        self._log = settings.logger
        self._name = f"receiver-{settings.id}"
        t = settings.telemetry
        self.accepted_samples = t.counter("receiver_accepted_samples")
        self.accepted_profiles = t.counter("receiver_accepted_profiles")
        self.refused_samples = t.counter("receiver_refused_samples")

    def emit(self, profiles: Sequence[Profile], source: str = "") -> bool:
        """Send ``profiles`` on; False (counted, logged) when the next component refused."""
        if not profiles:
            return True
        n = sum(len(p) for p in profiles)
        try:
            self._next.consume(Profiles(profiles))
        except Exception as exc:
            self.refused_samples.add(n)
            where = f" {source}:" if source else ""
            self._log.warning("%s:%s next component refused %d samples: %s", self._name,
                              where, n, exc)
            return False
        self.accepted_profiles.add(len(profiles))
        self.accepted_samples.add(n)
        return True
