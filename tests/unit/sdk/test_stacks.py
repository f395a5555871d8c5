"""Incremental stack walks (telegen.sdk.stacks): the same keys as a walk from
scratch, whatever the thread did between two ticks."""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator
from typing import Any

from telegen.sdk.stacks import MAX_DEPTH, walk


class Ticks:
    """Walks the calling thread's stack as a tick would, keeping the state."""

    def __init__(self) -> None:
        self.names: dict[int, Any] = {}
        self.state: Any = None

    def take(self) -> tuple[Any, ...]:
        frame = sys._getframe(1)
        stack, self.state = walk(frame, self.state, self.names)
        fresh, _ = walk(frame, None, {})
        assert stack == fresh
        return stack

    def functions(self, stack: tuple[Any, ...]) -> list[str]:
        return [self.names[cid][0].rsplit(".", 1)[-1] for cid, _ in stack]


def test_calls_and_returns_between_ticks_give_the_full_stack() -> None:
    t = Ticks()

    def leaf(n: int) -> list[str]:
        return t.functions(t.take())[:n]

    def mid(depth: int) -> list[str]:
        if depth:
            return mid(depth - 1)
        return leaf(8)

    seen = []
    for depth in (3, 0, 5, 5, 1):                   # deeper, shallower, same, ...
        seen.append(mid(depth))
    assert seen[0][:5] == ["leaf", "mid", "mid", "mid", "mid"]
    assert seen[1][:3] == ["leaf", "mid", "test_calls_and_returns_between_ticks_give_the_full_stack"]
    assert seen[2] == seen[3] and seen[4][:3] == ["leaf", "mid", "mid"]


def test_an_unchanged_stack_is_the_same_tuple() -> None:
    """A blocked thread: the same keys object, no walk; one that moved: new keys."""
    stop = threading.Event()
    th = threading.Thread(target=stop.wait, args=(30,))
    th.start()
    try:
        names: dict[int, Any] = {}
        first, state = walk(sys._current_frames()[th.ident or 0], None, names)
        again, state2 = walk(sys._current_frames()[th.ident or 0], state, names)
        assert again is first and state2 is state
        mine, state = walk(sys._getframe(), None, names)
        moved, _ = walk(sys._getframe(), state, names)
        assert moved is not mine and moved[1:] == mine[1:] and moved[0] != mine[0]
    finally:
        stop.set()
        th.join()


def test_a_generator_resumed_by_another_caller_shows_that_caller() -> None:
    t = Ticks()

    def gen() -> Generator[list[str], None, None]:
        while True:
            yield t.functions(t.take())

    g = gen()

    def first_caller() -> list[str]:
        return next(g)

    def second_caller() -> list[str]:
        return next(g)

    a = first_caller()
    b = second_caller()
    assert a[:2] == ["gen", "first_caller"] and b[:2] == ["gen", "second_caller"]


def test_deep_recursion_is_cut_at_the_root_side() -> None:
    t = Ticks()
    out: list[int] = []

    def down(n: int) -> None:
        if n:
            down(n - 1)
        else:
            frame = sys._getframe()
            stack, state = walk(frame, None, t.names)
            out.append(len(stack))
            out.append(state is None)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, MAX_DEPTH + 200))
    try:
        down(MAX_DEPTH + 50)
    finally:
        sys.setrecursionlimit(limit)
    assert out == [MAX_DEPTH, True]
