"""Python frames cut per eval call and merged into native stacks (receivers/ebpf/cpython.py)."""

from __future__ import annotations

import ctypes
import os
from types import SimpleNamespace
from typing import cast

import pytest

from telegen.bpf import syscall as sc
from telegen.interpreters.cpython import CodeReader
from telegen.pdata import Frame, FrameKind, Line
from telegen.receivers.ebpf.cpython import (
    KEEP_WINDOWS,
    Decoded,
    PyRuns,
    PythonFrames,
    eval_positions,
    splice_runs,
    split_runs,
)
from telegen.receivers.ebpf.cpython_maps import CPyStack
from telegen.receivers.ebpf.frames import TRUNCATED
from telegen.receivers.ebpf.keys import RawKey

EVAL = ((0x1000, 0x2000),)        # _PyEval_EvalFrameDefault's [start, end)


def py(name: str) -> Frame:
    return Frame(FrameKind.PYTHON, lines=(Line(name, "app.py", 1),))


def native(addr: int) -> Frame:
    return Frame(FrameKind.NATIVE, addr)


def merge_runs(stack: tuple[Frame, ...],
               runs: tuple[tuple[Frame, ...], ...]) -> tuple[tuple[Frame, ...], bool]:
    return splice_runs(stack, runs, eval_positions(stack, EVAL))


def names(frames: tuple[Frame, ...]) -> list[str]:
    return [f.lines[0].function if f.kind == FrameKind.PYTHON else hex(f.address)
            for f in frames]


def test_runs_per_version() -> None:
    a, b, c = py("a"), py("b"), py("c")
    # before 3.11: one frame per eval call
    assert split_runs(310, [(a, 0), (b, 0), (c, 0)]) == [[a], [b], [c]]
    # 3.11: a run ends at its entry frame (is_entry = 1)
    assert split_runs(311, [(a, 0), (b, 1), (c, 1)]) == [[a, b], [c]]
    # 3.12+: the C-stack shim (None) ends a run and is not shown
    assert split_runs(312, [(a, 0), (b, 0), (None, 3), (c, 0), (None, 3)]) == [[a, b], [c]]


def test_c_under_its_python_caller_and_python_called_back_above_c() -> None:
    # leaf first: sha256 <- hashlib C <- eval(run 0: py_hash, main) <- C sort <- eval(run 1)
    stack = (native(0x9000), native(0x8000), native(0x1100), native(0x7000), native(0x1200),
             native(0x500))
    runs = ((py("py_hash"), py("main")), (py("<module>"),))
    merged, exact = merge_runs(stack, runs)
    assert exact
    assert names(merged) == ["0x9000", "0x8000", "py_hash", "main", "0x7000", "<module>",
                             "0x500"]


def test_native_unwinding_stopped_early_puts_left_over_runs_at_the_root() -> None:
    stack = (native(0x9000), native(0x1100), TRUNCATED)
    runs = ((py("leaf"),), (py("outer"),))
    merged, exact = merge_runs(stack, runs)
    assert not exact
    assert names(merged) == ["0x9000", "leaf", "outer", "0x0"]
    assert merged[-1] is TRUNCATED


def test_more_eval_frames_than_runs_keeps_the_rest_native() -> None:
    stack = (native(0x1100), native(0x1200))
    merged, exact = merge_runs(stack, ((py("only"),),))
    assert not exact and names(merged) == ["only", "0x1200"]


def test_eval_frames_in_the_cold_part_count_and_markers_never_do() -> None:
    cold = ((0x1000, 0x2000), (0x5000, 0x5100))     # the function and its .cold part
    kernel = Frame(FrameKind.KERNEL, 0xFFFFFFFF81000000)
    stack = (kernel, native(0x5010), native(0x3000), native(0x1800), native(0x2000), TRUNCATED)
    assert eval_positions(stack, cold) == [1, 3]
    assert eval_positions(stack, EVAL) == [3]
    # a range from 0 (a process's odd symbols) must not take the [truncated] marker
    assert eval_positions(stack, ((0, 0x1900),)) == [3]
    merged, exact = splice_runs(stack, ((py("leaf"),), (py("outer"), py("main"))),
                                eval_positions(stack, cold))
    assert exact
    assert names(merged) == [hex(kernel.address), "leaf", "0x3000", "outer", "main", "0x2000",
                             "0x0"]


def test_merges_are_kept_by_content_while_the_id_holds_the_same_runs() -> None:
    """merge() memo: equal native frames (other tuples) find the merge made
    before, in this window and the next (after the id's entry was read again
    and found unchanged); a re-decoded id is merged again."""
    if os.geteuid() != 0:
        pytest.fail("needs root (a bpf map): run the unit tests as root")
    fd = sc.map_create(sc.MAP_LRU_HASH, 4, ctypes.sizeof(CPyStack), 16, 0, b"test_py_memo")
    stats_fd = sc.map_create(sc.MAP_PERCPU_ARRAY, 4, 80, 1, 0, b"test_py_memo_st")
    try:
        key_id, pid = ctypes.c_uint32(9), 4242
        entry = CPyStack(hash=77, pid=pid, depth=1, status=0)
        sc.update(fd, ctypes.addressof(key_id), ctypes.addressof(entry))
        tables = {"py_stacks": SimpleNamespace(map_fd=fd, Leaf=CPyStack),
                  "py_stats": SimpleNamespace(map_fd=stats_fd, sLeaf=ctypes.c_uint64 * 10),
                  "py_procs": SimpleNamespace()}
        frames = PythonFrames(tables.__getitem__, fsbase_offset=100, telemetry=None)
        frames._readers[pid] = cast(CodeReader, SimpleNamespace(
            process=SimpleNamespace(eval_ranges=EVAL)))
        first = PyRuns(((py("leaf"), py("main")),), "")
        decoded = Decoded(77, (), first)           # as _runs keeps what it decoded
        frames._decoded[(pid, 9)], frames._kept[(pid, 9)] = decoded, (decoded, 0)
        key = RawKey(pid, pid, 1, -2, 0, 1, "python", 9, 0)

        def stack() -> tuple[Frame, ...]:     # equal content, a new tuple each time
            return tuple(native(a) for a in (0x9000, 0x1100, 0x500))

        merged = frames.merge(key, stack(), 1)
        assert names(merged) == ["0x9000", "leaf", "main", "0x500"]
        assert frames.merge(key, stack(), 1) is merged
        for _ in range(3):                    # windows later: the entry is read again
            frames.window()                   # and found the same: same runs, same merge
            assert frames.merge(key, stack(), 1) is merged
        again = PyRuns(((py("other"),),), "")
        frames._decoded[(pid, 9)] = Decoded(77, (), again)   # as if decoded anew
        assert names(frames.merge(key, stack(), 1)) == ["0x9000", "other", "0x500"]
        for _ in range(2 * KEEP_WINDOWS):     # unused that long: forgotten
            frames.window()
        assert not frames._kept
    finally:
        os.close(fd)
        os.close(stats_fd)
