"""asyncio tasks seen from another thread, and their await chains.

Compatible with Python 3.8+. The set of live tasks is asyncio's own registry
(``asyncio.tasks._all_tasks`` up to 3.11, ``_scheduled_tasks`` +
``_eager_tasks`` from 3.12), read without touching any event loop; the task a
loop is running now is ``asyncio.tasks._current_tasks[loop]``.

The await chain of a suspended task starts at ``task.get_coro()`` and follows
``cr_await`` (coroutines), ``gi_yieldfrom`` (generator-based) and
``ag_await`` (async generators) down to the innermost coroutine; its frame's
line is the ``await`` it is suspended at. A future at the end of the chain
(``sleep``'s, a queue's or a lock's waiter) has no frame and ends it.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

_MAX_DEPTH = 256


def _registries() -> list[Any]:
    tasks_mod = sys.modules.get("asyncio.tasks")
    if tasks_mod is None:           # the application never imported asyncio
        return []
    out = []
    for name in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        reg = getattr(tasks_mod, name, None)
        if reg is not None:
            out.append(reg)
    return out


def running_tasks() -> set:  # type: ignore[type-arg]
    """ids of the tasks their loops are running right now."""
    tasks_mod = sys.modules.get("asyncio.tasks")
    current = getattr(tasks_mod, "_current_tasks", None) if tasks_mod else None
    if not current:
        return set()
    for _ in range(3):
        try:
            return {id(t) for t in list(current.values())}
        except RuntimeError:        # changed size while copying: try again
            continue
    return set()


def all_tasks() -> list[Any]:
    """Every live task of every loop in this process (a snapshot)."""
    out: list[Any] = []
    for reg in _registries():
        for _ in range(3):
            try:
                out.extend(list(reg))
                break
            except RuntimeError:
                continue
    return out


def _frame_of(obj: Any) -> FrameType | None:
    for attr in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(obj, attr, None)
        if frame is not None:
            return frame  # type: ignore[no-any-return]
    return None


def _awaited(obj: Any) -> Any:
    for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
        nxt = getattr(obj, attr, None)
        if nxt is not None:
            return nxt
    return None


def await_chain(task: Any) -> tuple[FrameType, ...]:
    """Frames of a suspended task's await chain, innermost (leaf) first."""
    try:
        obj = task.get_coro()
    except Exception:
        return ()
    frames: list[FrameType] = []
    while obj is not None and len(frames) < _MAX_DEPTH:
        frame = _frame_of(obj)
        if frame is None:
            break
        frames.append(frame)
        obj = _awaited(obj)
    frames.reverse()
    return tuple(frames)


def task_name(task: Any) -> str:
    get = getattr(task, "get_name", None)
    try:
        return str(get()) if get is not None else ""
    except Exception:
        return ""


def task_thread(task: Any) -> int | None:
    """The thread id running the task's loop (None before the loop ran)."""
    try:
        loop = task.get_loop()
    except Exception:
        return None
    return getattr(loop, "_thread_id", None)
