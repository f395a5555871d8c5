from __future__ import annotations

import copy
import pickle

import pytest

from telegen.pdata import (
    CPU,
    Frame,
    FrameKind,
    Line,
    Mapping,
    Profile,
    Profiles,
    SpanLink,
    infer_profile_name,
    make_labels,
)

LIBC = Mapping(start=0x7F0000000000, limit=0x7F0000200000, offset=0x28000,
               file="/usr/lib/libc.so.6")


def _frame(name: str) -> Frame:
    return Frame(FrameKind.NATIVE, 0x1000 + len(name), None, (Line(name, "a.c", 3),))


def test_identical_samples_merge_and_differ_by_labels_and_link() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    stack = (_frame("leaf"), _frame("main"))
    p.add(stack, [1, 10], make_labels(pid=1, comm="a"), timestamps=[5])
    p.add(stack, [2, 20], make_labels(comm="a", pid=1), timestamps=[6])
    p.add(stack, [1, 10], make_labels(pid=2, comm="a"))
    p.add(stack, [1, 10], make_labels(pid=1, comm="a"), link=SpanLink("a" * 32, "b" * 16))
    assert len(p) == 3
    merged = next(s for s in p if s.labels == make_labels(pid=1, comm="a") and s.link is None)
    assert merged.values == [3, 30]
    assert merged.timestamps == [5, 6]
    assert p.totals() == [5, 50]


def test_value_count_mismatch_is_rejected() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    with pytest.raises(ValueError, match="2 sample types"):
        p.add((), [1])


def test_frame_equality_hash_and_immutability() -> None:
    a = Frame(FrameKind.NATIVE, 0x7F0000001234, LIBC)
    b = Frame(FrameKind.NATIVE, 0x7F0000001234, LIBC)
    assert a == b and hash(a) == hash(b) and a is b      # interned: one object per content
    assert pickle.loads(pickle.dumps(a)) is a
    assert copy.copy(a) is a and copy.deepcopy((a,)) == (a,)
    assert Frame(FrameKind.NATIVE, 0x7F0000001234, None) != a
    assert Frame(FrameKind.JIT, 0x7F0000001234, LIBC) != a
    with pytest.raises(AttributeError):
        a.address = 1  # type: ignore[misc]
    assert a.name == "libc.so.6+0x29234"
    assert Frame(FrameKind.NATIVE, 0x10, None).name == "0x10"
    inl = a.with_lines((Line("inner"), Line("outer")))
    assert inl.name == "outer" and inl.function_names() == ["inner", "outer"]
    assert inl != a


def test_merge_profiles_extends_window_and_sums() -> None:
    a = Profile(name="cpu", sample_types=CPU, start_ns=100, duration_ns=50, resource={"h": "x"})
    b = Profile(name="cpu", sample_types=CPU, start_ns=150, duration_ns=50, resource={"h": "x"})
    a.add((_frame("f"),), [1, 1])
    b.add((_frame("f"),), [2, 2])
    b.add((_frame("g"),), [1, 1])
    a.merge(b)
    assert (a.start_ns, a.duration_ns) == (100, 100)
    assert a.totals() == [4, 4] and len(a) == 2
    c = Profile(name="cpu", sample_types=CPU, resource={"h": "y"})
    with pytest.raises(ValueError):
        a.merge(c)


def test_copy_is_independent() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    p.add((_frame("f"),), [1, 1])
    ps = Profiles([p])
    dup = ps.copy()
    next(iter(dup.profiles[0])).values[0] = 99
    assert p.totals() == [1, 1]


def test_value_index_and_profile_name_inference() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    assert p.value_index() == 1
    assert p.value_index("samples") == 0
    assert p.value_index("cpu/nanoseconds") == 1
    with pytest.raises(KeyError):
        p.value_index("alloc_space")
    assert infer_profile_name(CPU) == "cpu"


def test_frames_are_interned_once_across_threads_and_forgotten_when_dead() -> None:
    import gc
    import threading

    from telegen import pdata
    made: list[list[Frame]] = [[] for _ in range(8)]
    go = threading.Barrier(8)

    def make(i: int) -> None:
        go.wait()
        made[i] = [Frame(FrameKind.NATIVE, 0xDEAD0000 + n, LIBC) for n in range(2000)]

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(2000):          # every thread got the same object for the same content
        assert len({id(m[n]) for m in made}) == 1
    before = len(pdata._FRAMES)
    made.clear()
    gc.collect()
    assert len(pdata._FRAMES) <= before - 2000     # the table does not keep dead frames
    again = Frame(FrameKind.NATIVE, 0xDEAD0000, LIBC)
    assert again == Frame(FrameKind.NATIVE, 0xDEAD0000, LIBC)
