"""Per-CPU stat slots of a BPF program (never cleared in the kernel): user
space sums the CPUs and reports what changed since the last read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class StatDeltas:
    def __init__(self, table: Callable[[], Any], names: Sequence[str]) -> None:
        self._table = table          # looked up at read time (maps live with the BPF object)
        self._names = tuple(names)
        self._prev = [0] * len(self._names)

    def delta(self) -> dict[str, int]:
        table = self._table()
        now = []
        for i in range(len(self._names)):
            try:
                now.append(int(sum(table[table.Key(i)])))
            except Exception:        # a map that is gone or a slot not yet written
                now.append(0)
        delta = {n: a - b for n, a, b in zip(self._names, now, self._prev, strict=True)}
        self._prev = now
        return delta
