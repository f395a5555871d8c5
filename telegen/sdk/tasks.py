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

:class:`ChainWalker` is the sampler's fast path: it walks chains with a type
check per link instead of probing attributes, records frames as
``(id(code), f_lasti)`` (see :mod:`telegen.sdk.codes`), and reuses a task's
chain from the previous tick while the task is still blocked on the same
pending future (``task._fut_waiter``): a task only runs when the future it
waits on completes, and a completed future is never waited on again, so the
same waiter means the coroutines have not moved since.
"""

from __future__ import annotations

import sys
from types import CodeType, CoroutineType, FrameType, GeneratorType
from typing import TYPE_CHECKING, Any

from telegen.sdk import codes

if TYPE_CHECKING:
    from collections.abc import Callable

    from telegen.sdk.codes import FrameKey, Names, SampleKey
    from telegen.sdk.spans import Link

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
        data = getattr(reg, "data", None)       # a WeakSet: its set of weakrefs
        for _ in range(3):
            try:
                if data is not None:
                    out.extend([t for r in list(data) if (t := r()) is not None])
                else:
                    out.extend(list(reg))
                break
            except RuntimeError:                # changed size while copying: again
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


class ChainWalker:
    """Samples of suspended tasks: (tid, thread name, task name, await chain
    as frame keys leaf first, span link)."""

    def __init__(self, names: Names) -> None:
        self.names = names
        # id(task) -> (task, the future it waited on, its sample) from the last tick
        self._blocked: dict[int, tuple[Any, Any, SampleKey]] = {}

    def tick(self, threads: dict[int, Any], for_task: Callable[[Any], Link | None],
             out: list[SampleKey]) -> None:
        """Append a sample for every suspended task with a chain to ``out``.

        A task still blocked on the future it waited on at the last tick has
        not run since (see the module notes): its whole sample from then is
        reused -- chain, names and span link (its spans start and end as it
        runs) -- so it costs a dict lookup and two identity checks."""
        running = running_tasks()
        old, blocked = self._blocked, {}
        loops: dict[int, tuple[int, str]] = {}     # id(loop) -> (tid, thread name)
        walk = self.walk
        for task in all_tasks():
            key = id(task)
            if key in running:
                continue
            try:
                waiter = task._fut_waiter
                if waiter is not None:
                    hit = old.get(key)
                    if hit is not None and hit[1] is waiter and hit[0] is task:
                        blocked[key] = hit
                        out.append(hit[2])
                        continue
                chain = walk(task.get_coro())
                if not chain:           # done
                    continue
                loop = task.get_loop()
                where = loops.get(id(loop))
                if where is None:
                    where = loops[id(loop)] = _loop_thread(loop, threads)
                sample = (where[0], where[1], task.get_name(), chain, for_task(task))
                if waiter is not None:
                    blocked[key] = (task, waiter, sample)
                out.append(sample)
            except Exception:
                continue
        self._blocked = blocked

    def walk(self, obj: Any) -> tuple[FrameKey, ...]:
        names = self.names
        out: list[FrameKey] = []
        append = out.append
        while obj is not None:          # finite: a coroutine cannot await itself
            tp = type(obj)
            if tp is CoroutineType:
                frame = obj.cr_frame
                obj = obj.cr_await
            elif tp is GeneratorType:
                frame = obj.gi_frame
                obj = obj.gi_yieldfrom
            else:                       # async generators, other coroutine types
                frame = _frame_of(obj)
                obj = _awaited(obj)
            if frame is None:
                break
            code: CodeType = frame.f_code
            cid = id(code)
            if cid not in names:
                codes.register(names, code, frame)
            append((cid, frame.f_lasti))
        if len(out) > _MAX_DEPTH:
            del out[:len(out) - _MAX_DEPTH]
        out.reverse()
        return tuple(out)


def _loop_thread(loop: Any, threads: dict[int, Any]) -> tuple[int, str]:
    """(native thread id, thread name) of the thread running ``loop``."""
    ident = getattr(loop, "_thread_id", None) or 0
    th = threads.get(ident)
    return (th.native_id or ident, th.name) if th is not None else (ident, "")
