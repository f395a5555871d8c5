"""Kernel symbols from ``/proc/kallsyms``, module names kept (``name [module]``)."""

from __future__ import annotations

from bisect import bisect_right

from telegen.procinfo import KALLSYMS

_TEXT_TYPES = frozenset("TtWw")


class KernelSymbols:
    """Sorted kernel text symbols. Read once, lazily, by the caller."""

    def __init__(self, path: str = KALLSYMS) -> None:
        entries: list[tuple[int, str, str]] = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in _TEXT_TYPES:
                    continue
                addr = int(parts[0], 16)
                if not addr:       # kptr_restrict hides addresses from this reader
                    continue
                module = parts[3][1:-1] if len(parts) > 3 and parts[3].startswith("[") else ""
                entries.append((addr, parts[2], module))
        entries.sort(key=lambda e: (e[0], e[1].startswith("_"), len(e[1])))
        self.starts: list[int] = []
        self.names: list[str] = []
        self.modules: list[str] = []
        for addr, name, module in entries:
            if self.starts and self.starts[-1] == addr:
                continue
            self.starts.append(addr)
            self.names.append(name)
            self.modules.append(module)

    def __len__(self) -> int:
        return len(self.starts)

    def lookup(self, address: int) -> tuple[str, str, int] | None:
        """(symbol, module or '', symbol start) for a kernel address, or None.

        kallsyms has no sizes: an address belongs to the nearest symbol below it,
        within 1 MiB (beyond that it is outside any known text).
        """
        i = bisect_right(self.starts, address) - 1
        if i < 0 or address - self.starts[i] > 1 << 20:
            return None
        return self.names[i], self.modules[i], self.starts[i]
