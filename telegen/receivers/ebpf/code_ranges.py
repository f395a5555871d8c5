"""Where each process's code is, for the stack-copy dedupe (bpf/telegen.h
``usnap_ranges``, ``struct code_ranges``).

A stack copy is deduped in BPF on (ip, sp, bp, a hash of the 64 words at
sp). In an interpreter's loop those words are mostly the frames' locals and
change from sample to sample, so every sample of a busy CPython service was a
new copy unwound by the agent. With a process's code ranges in
``usnap_ranges`` the hash takes only the words that point into code — the
return addresses, at their offsets — which is what the unwinder's answer
depends on: measured on a busy CPython service, 2370 copies, 1022 distinct
unwound stacks, 1123 distinct code-word keys (the 64-word hash: 2370).

A key stands for every later sample with the same code words, so a return
address the ranges did not hold (a library loaded after they were written, a
JIT region) would let two stacks share a key: :meth:`CodeRanges.covers`
checks each unwound copy's return addresses and the unwinder drops the key
and writes the ranges again when one is outside (``unwind_code_keys_dropped``).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Sequence
from typing import Any

from telegen.pdata import Mapping

log = logging.getLogger(__name__)

CODE_RANGES = 8        # bpf/telegen.h CODE_RANGES
HASH_CODE = 2          # usnap_key.hash bit 1 (with bit 0): keyed on the code words
CHECKED_RETURNS = 16   # return addresses checked per copy: those near sp come first


def merge(mappings: Sequence[Mapping], limit: int = CODE_RANGES) -> list[tuple[int, int]]:
    """The executable ``mappings`` as at most ``limit`` ranges: touching ones
    joined, then the closest neighbours until ``limit`` are left (a gap
    joined in is only data between two libraries: a word there counts as code,
    which costs dedupe hits, never correctness)."""
    spans: list[list[int]] = []
    for lo, hi in sorted((m.start, m.limit) for m in mappings if m.limit > m.start):
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    while len(spans) > limit:
        i = min(range(len(spans) - 1), key=lambda j: spans[j + 1][0] - spans[j][1])
        spans[i][1] = spans[i + 1][1]
        del spans[i + 1]
    return [(lo, hi) for lo, hi in spans]


class CodeRanges:
    """``usnap_ranges`` kept in step with the processes the unwinder sees."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._lock = threading.Lock()
        # pid -> (range starts, range ends) as written
        self._written: dict[int, tuple[list[int], list[int]]] = {}
        self.errors = 0               # map writes/deletes refused: unwind_code_ranges_errors

    def write(self, pid: int, mappings: Sequence[Mapping]) -> None:
        """Tell BPF where ``pid``'s code is (nothing when already so)."""
        ranges = merge(mappings)
        starts, ends = [lo for lo, _ in ranges], [hi for _, hi in ranges]
        with self._lock:
            if self._written.get(pid) == (starts, ends):
                return
            self._written[pid] = (starts, ends)
        t = self._table
        leaf = t.Leaf()
        leaf.n = len(ranges)
        for i, (lo, hi) in enumerate(ranges):
            leaf.lo[i], leaf.hi[i] = lo, hi
        try:
            t[t.Key(pid)] = leaf
        except Exception as exc:      # full map: this process keeps the 64-word hash
            self.errors += 1
            log.debug("code ranges of %d not written: %s", pid, exc)
            with self._lock:
                self._written.pop(pid, None)

    def covers(self, pid: int, return_addresses: Sequence[int]) -> bool:
        """Whether the ranges written for ``pid`` hold each of the first
        CHECKED_RETURNS ``return_addresses`` (a stack's top frames: those whose
        slots the 64 hashed words can hold)."""
        with self._lock:
            written = self._written.get(pid)
        if written is None:
            return False
        starts, ends = written
        for a in return_addresses[:CHECKED_RETURNS]:
            i = bisect.bisect_right(starts, a) - 1
            if i < 0 or a >= ends[i]:
                return False
        return True

    def forget(self, pids: Sequence[int]) -> None:
        """Processes gone (or a new image after exec): their entries go."""
        t = self._table
        for pid in pids:
            with self._lock:
                had = self._written.pop(pid, None)
            if had is not None:
                try:
                    del t[t.Key(pid)]
                except KeyError:
                    pass
                except Exception as exc:
                    self.errors += 1
                    log.debug("code ranges of %d not removed: %s", pid, exc)
