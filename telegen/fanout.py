"""Hand one batch of profiles to several consumers."""

from __future__ import annotations

from collections.abc import Sequence

from telegen.component import Consumer, PermanentError
from telegen.pdata import Profiles


class FanoutError(Exception):
    def __init__(self, errors: list[BaseException]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class Fanout:
    """Calls every consumer even when one fails. Data is copied only for consumers
    that mutate it, and when every consumer mutates, the last one gets the
    original (Collector semantics)."""

    def __init__(self, consumers: Sequence[Consumer]) -> None:
        readers = [c for c in consumers if not c.mutates_data]
        writers = [c for c in consumers if c.mutates_data]
        self._ordered = readers + writers
        # The original may go to a writer only if no reader shares it.
        self._original_to = len(self._ordered) - 1 if not readers else -1
        self.mutates_data = False

    @property
    def consumers(self) -> list[Consumer]:
        return list(self._ordered)

    def consume(self, profiles: Profiles) -> None:
        errors: list[BaseException] = []
        for i, consumer in enumerate(self._ordered):
            data = profiles
            if consumer.mutates_data and i != self._original_to:
                data = profiles.copy()
            try:
                consumer.consume(data)
            except Exception as exc:
                errors.append(exc)
        if not errors:
            return
        if len(errors) == 1:
            raise errors[0]
        if all(isinstance(e, PermanentError) for e in errors):
            raise PermanentError(str(FanoutError(errors)))
        raise FanoutError(errors)
