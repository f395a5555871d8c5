from __future__ import annotations

import errno

from telegen.pdata import FrameKind, Mapping
from telegen.receivers.ebpf.frames import KERNEL_MAPPING, build_stack
from telegen.receivers.ebpf.keys import KEY_USER_MODE, RawKey
from telegen.receivers.ebpf.stacks import OVERFLOW_BIT, FramePointerStacks

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
    """Enough of a BCC stack-trace table: Key(), [] lookup, clear()."""

    class Key(int):
        pass

    class Value:
        def __init__(self, ips: tuple[int, ...]) -> None:
            self.ip = list(ips) + [0] * (127 - len(ips))

    def __init__(self, stacks: dict[int, tuple[int, ...]]) -> None:
        self.stacks = dict(stacks)

    def __getitem__(self, key: int) -> FakeStackMap.Value:
        return FakeStackMap.Value(self.stacks[int(key)])

    def clear(self) -> None:
        self.stacks.clear()


def test_pending_off_cpu_stacks_survive_the_clear() -> None:
    gen0 = FakeStackMap({1: (0x10, 0x20), 2: (0x30,)})
    ovf0 = FakeStackMap({5: (0x50,)})
    s = FramePointerStacks((gen0, FakeStackMap({})), (ovf0, FakeStackMap({})))
    s.begin(0)
    assert s.addresses(0, 1) == (0x10, 0x20)
    assert s.addresses(0, 5 | OVERFLOW_BIT) == (0x50,)
    assert s.addresses(0, 99) is None and s.addresses(0, -errno.EEXIST) is None
    s.end(0, {(0, 2), (0, 5 | OVERFLOW_BIT)})   # a thread still blocked with stack 2
    assert gen0.stacks == {} and ovf0.stacks == {}
    s.begin(1)
    assert s.addresses(0, 2) == (0x30,)          # resolved from the carry
    assert s.addresses(0, 1) is None             # not needed any more: gone
    s.end(1, {(0, 2)})
    s.begin(2)
    assert s.addresses(0, 2) == (0x30,)          # still blocked two windows later
    s.end(2, set())
    assert s.carried == 0


def test_raw_key_user_mode_flag() -> None:
    k = RawKey(1, 2, 3, -errno.EFAULT, 0, KEY_USER_MODE, "app")
    assert k.user_mode and not k._replace(flags=0).user_mode
