"""The bounds proposed for other owners' caches (#21), applied to a running
agent by ``bench.agent_probe --patch`` so that their effect is measured
before they are written into the files:

- ``CfiStacks._results``: 2 × USNAP_ENTRIES (BPF reuses a snapshot id only
  while it is in its ``usnap_seen`` LRU), not 65536;
- copies waiting to be unwound (``_pending``) or for a table (``_retry``):
  1024 each, not 4096 (16 KiB at most each);
- ``CfiStacks._spaces`` / ``_refreshed`` of a process dropped when
  ``ProcessCache`` releases it (``on_release``);
- ``AddressSpace`` memo: 16384 addresses per process, not 262144;
- ``SymbolizeProcessor._memo``: 50k (pid, frame) entries, not 500k;
- ``Symbolizer._perfmap``: a pid found without a perf map is not asked again
  for 10 s (each anonymous frame read /proc/PID/status and tried to open
  /tmp/perf-N.map: 40% of the window thread's time under churn).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from typing import Any

MEMO_PER_SPACE = 16384
NO_PERF_MAP_S = 10.0


def apply() -> list[str]:
    """Patch the modules in place; returns what was patched."""
    from telegen.processors.symbolize import symbolize
    from telegen.receivers.ebpf import bpf_loader, unwinding
    from telegen.unwind import unwinder

    unwinding.RESULTS = 2 * bpf_loader.USNAP_ENTRIES
    unwinding.MAX_PENDING = 1024
    symbolize._MEMO_LIMIT = 50_000     # type: ignore[attr-defined]
    init = unwinding.CfiStacks.__init__

    def cfi_init(self: Any, fp: Any, processes: Any, **kw: Any) -> None:
        init(self, fp, processes, **kw)

        def forget(pids: list[int]) -> None:
            with self._work_lock:
                for pid in pids:
                    self._spaces.pop(pid, None)
                    self._refreshed.pop(pid, None)
        processes.on_release(forget)

    unwinding.CfiStacks.__init__ = cfi_init     # type: ignore[method-assign]

    def rule_at(self: Any, address: int) -> Any:
        memo = self._memo
        if address in memo:
            return memo[address]
        i = bisect_right(self._starts, address) - 1
        rule = None
        if i >= 0:
            limit, table, bias, go, go_bias = self._entries[i]
            if address < limit:
                rule = table.rule(address - bias) if table is not None else \
                    (unwinder.NONE, 0, 0, 0)
                if go is not None:
                    rule = go.rule(address - go_bias) or rule
        if len(memo) < MEMO_PER_SPACE:
            memo[address] = rule
        return rule

    unwinder.AddressSpace.rule_at = rule_at     # type: ignore[method-assign]

    from telegen.symbols import symbolizer
    perfmap = symbolizer.Symbolizer._perfmap

    def perfmap_or_none(self: Any, pid: int) -> Any:
        misses = self.__dict__.setdefault("_no_perfmap", {})
        now = time.monotonic()
        if misses.get(pid, 0.0) > now:
            return None
        pm = perfmap(self, pid)
        if pm is None:
            if len(misses) > 65536:
                misses.clear()
            misses[pid] = now + NO_PERF_MAP_S
        return pm

    symbolizer.Symbolizer._perfmap = perfmap_or_none    # type: ignore[method-assign]
    return ["unwinding.RESULTS", "unwinding.MAX_PENDING", "symbolize._MEMO_LIMIT",
            "CfiStacks forgets released pids", "AddressSpace memo 16384",
            "Symbolizer: no perf map of a pid remembered 10 s"]
