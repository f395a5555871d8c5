"""Python frames cut per eval call and merged into native stacks (receivers/ebpf/cpython.py)."""

from __future__ import annotations

from telegen.pdata import Frame, FrameKind, Line
from telegen.receivers.ebpf.cpython import eval_positions, splice_runs, split_runs
from telegen.receivers.ebpf.frames import TRUNCATED

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
