"""Unwound user stacks by snapshot id, kept packed (#21 lean agent).

:class:`~telegen.receivers.ebpf.unwinding.CfiStacks` keeps the result of
every unwound copy for as long as BPF may hand its snapshot id to later
samples (dedupe): up to ``2 * USNAP_ENTRIES`` results. As tuples of Python
ints a stack of 20-40 frames costs ~1.5 kB an entry (a 32-byte int per
address, the tuples, the cache's own entries); packed in one ``bytes`` — the
addresses as little-endian u64, then one byte for the outcome — ~350 bytes
(tracemalloc, a full cache of 16384: 24.8 MB before, 5.8 MB now). The
window thread gets the tuple back (``struct`` unpack, once per distinct
stack and window: :class:`~telegen.receivers.ebpf.profiles.ProfileBuilder`
memoizes it).

:class:`Recent` is the bounded least-recently-used mapping under both this
and the snapshot keys: one ``OrderedDict`` instead of a cachetools
``LRUCache`` (a dict plus an ``OrderedDict``), same order of eviction.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from telegen.unwind.unwinder import MAX_DEPTH

FULL, TRUNCATED, ERROR = "full", "truncated", "error"
_OUTCOMES = (FULL, TRUNCATED, ERROR)           # the outcome byte -> its name
_CODES = {name: code for code, name in enumerate(_OUTCOMES)}
_EMPTY = tuple(bytes((code,)) for code in range(len(_OUTCOMES)))   # no addresses

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A mapping of at most ``maxsize`` entries; a ``get`` hit or a ``set``
    makes an entry the most recent, and the least recent goes first (the
    order of cachetools' ``LRUCache``). Not thread-safe by itself."""

    __slots__ = ("maxsize", "_entries")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            entries.move_to_end(key)
        return value

    def set(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.maxsize:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class UnwoundStacks:
    """snapshot id -> (addresses, outcome), packed; written by the unwinder
    thread, read by the window thread (one lock: a get reorders the LRU)."""

    def __init__(self, maxsize: int) -> None:
        self._stacks: Recent[int, bytes] = Recent(maxsize)
        self._lock = threading.Lock()

    def put(self, snap_id: int, addresses: tuple[int, ...], outcome: str) -> None:
        code = _CODES[outcome]
        packed = _layout(len(addresses))[0].pack(*addresses, code) if addresses \
            else _EMPTY[code]
        with self._lock:
            self._stacks.set(snap_id, packed)

    def get(self, snap_id: int) -> tuple[tuple[int, ...], str] | None:
        with self._lock:
            packed = self._stacks.get(snap_id)
        if packed is None:
            return None
        n = len(packed) >> 3
        addresses: tuple[int, ...] = _layout(n)[1].unpack_from(packed) if n else ()
        return addresses, _OUTCOMES[packed[-1]]

    def outcome(self, snap_id: int) -> str | None:
        with self._lock:
            packed = self._stacks.get(snap_id)
        return None if packed is None else _OUTCOMES[packed[-1]]

    def __len__(self) -> int:
        return len(self._stacks)


_LAYOUTS: dict[int, tuple[struct.Struct, struct.Struct]] = {}


def _layout(n: int) -> tuple[struct.Struct, struct.Struct]:
    """(pack n addresses and the outcome byte, unpack the n addresses)."""
    hit = _LAYOUTS.get(n)
    if hit is None:
        hit = (struct.Struct(f"<{n}QB"), struct.Struct(f"<{n}Q"))
        if n <= MAX_DEPTH + 1:          # + the truncation mark: a bounded set
            _LAYOUTS[n] = hit
    return hit
