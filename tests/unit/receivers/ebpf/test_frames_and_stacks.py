from __future__ import annotations

import errno

from telegen.pdata import FrameKind, Mapping
from telegen.receivers.ebpf.frames import KERNEL_MAPPING, build_stack
from telegen.receivers.ebpf.keys import KEY_USER_MODE, RawKey
from telegen.receivers.ebpf.stacks import KEEP_WINDOWS, OVERFLOW_BIT, FramePointerStacks

APP = Mapping(start=0x1000, limit=0x2000, offset=0x1000, file="/app")


def lookup(addr: int) -> Mapping | None:
    return APP if APP.start <= addr < APP.limit else None


def test_user_mode_leaf_is_exact_callers_minus_one() -> None:
    stack = build_stack(kernel=(), user=(0x1100, 0x1200, 0x9000), user_mode=True,
                        find_mapping=lookup)
    assert [f.address for f in stack] == [0x1100, 0x11FF, 0x8FFF]
    assert [f.mapping for f in stack] == [APP, APP, None]
    assert all(f.kind is FrameKind.NATIVE for f in stack)


def test_kernel_leaf_exact_and_user_top_is_a_return_address() -> None:
    stack = build_stack(kernel=(0xFFFFFFFF81000010, 0xFFFFFFFF81000200), user=(0x1100,),
                        user_mode=False, find_mapping=lookup)
    assert [f.kind for f in stack] == [FrameKind.KERNEL, FrameKind.KERNEL, FrameKind.NATIVE]
    assert [f.address for f in stack] == [0xFFFFFFFF81000010, 0xFFFFFFFF810001FF, 0x10FF]
    assert stack[0].mapping is KERNEL_MAPPING


def test_failed_and_truncated_stacks_keep_a_marker() -> None:
    failed = build_stack(kernel=(), user=None, user_mode=True, find_mapping=lookup)
    assert [f.kind for f in failed] == [FrameKind.TRUNCATED]
    assert failed[0].name == "[truncated]"
    cut = build_stack(kernel=(), user=(0x1100,) * 3, user_mode=True, find_mapping=lookup,
                      truncated=True)
    assert cut[-1].kind is FrameKind.TRUNCATED and len(cut) == 4
    kthread = build_stack(kernel=(), user=(), user_mode=False, find_mapping=lookup)
    assert [f.name for f in kthread] == ["[kernel]"]


class FakeStackMap:
    """Enough of a stack-trace table: Key(), [] look-up (counted), keys(), del."""

    class Key(int):
        pass

    class Value:
        def __init__(self, ips: tuple[int, ...]) -> None:
            self.ip = list(ips) + [0] * (127 - len(ips))

    def __init__(self, stacks: dict[int, tuple[int, ...]], max_entries: int = 1 << 14) -> None:
        self.stacks = dict(stacks)
        self.max_entries = max_entries
        self.reads = 0

    def __getitem__(self, key: int) -> FakeStackMap.Value:
        self.reads += 1
        return FakeStackMap.Value(self.stacks[int(key)])

    def __delitem__(self, key: int) -> None:
        del self.stacks[int(key)]

    def keys(self) -> list[FakeStackMap.Key]:
        return [FakeStackMap.Key(k) for k in self.stacks]


def test_ids_are_read_once_and_swept_when_unused_and_unneeded() -> None:
    """A steady workload reads each id once, whatever the number of windows;
    a sweep deletes ids unused for KEEP_WINDOWS windows of their generation
    and ids nobody read — never one a blocked thread still references."""
    gen0 = FakeStackMap({1: (0x10, 0x20), 2: (0x30,), 3: (0x40,)})
    ovf0 = FakeStackMap({5: (0x50,)})
    s = FramePointerStacks((gen0, FakeStackMap({})), (ovf0, FakeStackMap({})))
    needed: set[tuple[int, int]] = set()
    asked = 0

    def still_needed() -> set[tuple[int, int]]:
        nonlocal asked
        asked += 1
        return set(needed)

    s.begin(0)
    assert s.addresses(0, 1) == (0x10, 0x20)
    assert s.addresses(0, 2) == (0x30,)
    assert s.addresses(0, 5 | OVERFLOW_BIT) == (0x50,)
    assert s.addresses(0, 99) is None and s.addresses(0, -errno.EEXIST) is None
    needed.add((0, 2))                        # a thread still blocked with stack 2
    s.end(0, still_needed)                    # 3 was never read: gone; 1, 2, 5 kept
    assert set(gen0.stacks) == {1, 2} and set(ovf0.stacks) == {5} and asked == 1
    for seq in range(2, 2 * KEEP_WINDOWS + 4, 2):   # id 1 used every window of generation 0
        s.begin(seq)
        assert s.addresses(seq, 1) == (0x10, 0x20)
        s.end(seq, still_needed)
        s.begin(seq + 1)
        s.end(seq + 1, still_needed)
    assert gen0.reads == 3 and ovf0.reads == 1     # each id read once
    assert set(gen0.stacks) == {1, 2} and ovf0.stacks == {}   # 5 unused: swept; 2 needed
    assert s.addresses(0, 2) == (0x30,)       # the blocked thread's stack still resolves
    assert s.deleted == 2


def test_raw_key_user_mode_flag() -> None:
    k = RawKey(1, 2, 3, -errno.EFAULT, 0, KEY_USER_MODE, "app")
    assert k.user_mode and not k._replace(flags=0).user_mode
