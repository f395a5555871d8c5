"""CfiStacks' unwound stacks kept packed (#21): the same stacks and outcomes
come back as were put, least recently used entries go first in the same
order as cachetools' LRUCache (which it replaced), and a full cache of
realistic stacks takes a fraction of the memory of tuples of ints."""

from __future__ import annotations

import gc
import random
import tracemalloc

from cachetools import LRUCache

from telegen.receivers.ebpf.stacks import TRUNCATED_MARK
from telegen.receivers.ebpf.unwinding import (
    ERROR,
    FULL,
    TRUNCATED,
    USNAP_BIT,
    CfiStacks,
)
from telegen.receivers.ebpf.unwound import Recent, UnwoundStacks
from telegen.unwind import TableCache
from telegen.unwind.unwinder import MAX_DEPTH


def _stack(rng: random.Random, depth: int) -> tuple[int, ...]:
    base = rng.choice((0x7F3A_1C00_0000, 0x55D4_8E20_0000, 0x7FFC_0000_0000))
    return tuple(base + rng.randrange(1 << 24) for _ in range(depth))


def test_stacks_and_outcomes_come_back_as_put() -> None:
    rng = random.Random(1)
    stacks = UnwoundStacks(64)
    cases = {
        1: ((), ERROR),
        2: ((0x401000,), FULL),
        3: ((*_stack(rng, 30), TRUNCATED_MARK), TRUNCATED),
        4: (_stack(rng, MAX_DEPTH), FULL),
        5: ((*_stack(rng, MAX_DEPTH), TRUNCATED_MARK), TRUNCATED),
        6: ((0, (1 << 64) - 1, 1 << 63), FULL),        # the extremes of a u64
        7: (_stack(rng, 300), FULL),                   # longer than any layout kept
        8: ((), TRUNCATED),
    }
    for snap_id, (addresses, outcome) in cases.items():
        stacks.put(snap_id, addresses, outcome)
    for snap_id, (addresses, outcome) in cases.items():
        assert stacks.get(snap_id) == (addresses, outcome)
        assert stacks.outcome(snap_id) == outcome
    assert stacks.get(99) is None and stacks.outcome(99) is None


def test_eviction_order_is_cachetools_lru() -> None:
    rng = random.Random(2)
    ours: Recent[int, int] = Recent(50)
    theirs: LRUCache[int, int] = LRUCache(50)
    for step in range(20_000):
        key = rng.randrange(120)
        if rng.random() < 0.4:
            assert ours.get(key) == theirs.get(key), step
        else:
            ours.set(key, step)
            theirs[key] = step
        assert len(ours) == len(theirs)
    assert all(ours.get(k) == theirs.get(k) for k in range(120))


class _Procs:
    def on_release(self, callback: object) -> None:
        pass


def test_cfi_stacks_answers_as_before_and_a_full_cache_is_small() -> None:
    """Through CfiStacks' own entry points: what the window thread reads."""
    rng = random.Random(3)
    cfi = CfiStacks(None, _Procs(), name="auto",                 # type: ignore[arg-type]
                    tables=TableCache(disk=False))
    cap = cfi._results._stacks.maxsize
    ids = [USNAP_BIT | i for i in range(cap)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept: dict[int, tuple[tuple[int, ...], str]] = {}
        for n, snap_id in enumerate(ids):
            outcome = ERROR if n % 50 == 5 else TRUNCATED if n % 10 == 0 else FULL
            addresses = () if outcome == ERROR else _stack(rng, rng.randint(20, 40))
            if outcome == TRUNCATED:
                addresses = (*addresses, TRUNCATED_MARK)
            cfi._result(snap_id, (addresses, outcome))
            if n % 97 == 0:
                kept[snap_id] = (addresses, outcome)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    for snap_id, (addresses, outcome) in kept.items():
        assert cfi.outcome(snap_id) == outcome
        assert cfi.addresses(0, snap_id) == (None if outcome == ERROR else addresses)
    # ~30 frames of 8 bytes + the entry: as tuples of ints it was ~1.5 kB an entry
    per_entry = used / cap
    print(f"{cap} results: {used / 1e6:.2f} MB, {per_entry:.0f} B an entry")
    assert per_entry < 450, per_entry
    # one more: the least recently used goes — ids[1]; ids[0] was read just now
    cfi._result(USNAP_BIT | cap, ((0x401000,), FULL))
    assert cfi.outcome(ids[1]) == ERROR and cfi.addresses(0, ids[1]) is None
    assert cfi.addresses(0, ids[0]) == kept[ids[0]][0]
    assert cfi.addresses(0, USNAP_BIT | cap) == (0x401000,)
