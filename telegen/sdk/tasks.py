"""asyncio tasks seen from another thread, and their await chains.

Compatible with Python 3.8+. The set of live tasks is asyncio's own registry
(``asyncio.tasks._all_tasks`` up to 3.11, ``_scheduled_tasks`` +
``_eager_tasks`` from 3.12), read without touching any event loop; a task
running now (its coroutine is executing) is on its thread's stack and not
sampled as a task.

The await chain of a suspended task starts at ``task.get_coro()`` and follows
``cr_await`` (coroutines), ``gi_yieldfrom`` (generator-based) and
``ag_await`` (async generators) down to the innermost coroutine; its frame's
line is the ``await`` it is suspended at. A future at the end of the chain
(``sleep``'s, a queue's or a lock's waiter) has no frame and ends it.

:class:`ChainWalker` is the sampler's fast path: it walks chains with a type
check per link instead of probing attributes, copies frames as
``code, f_lasti`` (named later, :mod:`telegen.sdk.fold`), and reuses a
task's copy from the previous tick while the task is still blocked on the same
pending future (``task._fut_waiter``): a task only runs when the future it
waits on completes, and a completed future is never waited on again, so the
same waiter means the coroutines have not moved since.
"""

from __future__ import annotations

import random
import sys
import weakref
from types import CoroutineType, FrameType, GeneratorType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from telegen.sdk.fold import Capture
    from telegen.sdk.spans import SpanTracker

class Registry:
    """asyncio's registries of live tasks, looked up once asyncio is imported
    (they are module globals that are never replaced)."""

    def __init__(self) -> None:
        self._sets: list[Any] | None = None      # sets of tasks or of weakrefs to tasks

    def _resolve(self) -> bool:
        mod = sys.modules.get("asyncio.tasks")
        if mod is None:             # the application has not imported asyncio (yet)
            return False
        sets = []
        for name in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
            reg = getattr(mod, name, None)
            if reg is not None:
                data = getattr(reg, "data", None)   # a WeakSet: its set of weakrefs
                sets.append(data if data is not None else reg)
        self._sets = sets
        return True

    def refs(self) -> list[Any]:
        """Every live task of every loop (a snapshot), each as the task or as
        a weak reference to it: one C-level copy per registry; only the
        tasks a tick visits are dereferenced."""
        if self._sets is None and not self._resolve():
            return []
        out: list[Any] = []
        for data in self._sets or ():
            for _ in range(3):
                try:
                    out.extend(list(data))
                    break
                except RuntimeError:            # changed size while copying: again
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


class ChainWalker:
    """Copies of suspended tasks' await chains, for the sampler's ticks
    (named and counted later, :mod:`telegen.sdk.fold`).

    ``max_tasks`` bounds the tasks visited per tick (0: every task, every
    tick). With more live tasks than that, the registry is visited in
    rotation -- ``r = ceil(tasks / max_tasks)`` ticks to go round, each tick
    one ``r``-th of it -- and every sample counts ``r``, so each task keeps
    its expected share of the time while a tick's cost stays bounded however
    many connections a service keeps parked (the way JFR's execution sampler
    bounds the threads it visits per period). A round visits the ``r``
    slices in a random order, so a task that lives fewer than ``r`` ticks
    (a server's requests) has its ``1/r`` chance at each tick it lives
    wherever it stands in the registry, while over whole rounds every task
    still gets exactly one count per tick; the registry is copied at every
    tick for the same reason.

    Nothing here or in a capture holds a task: a finished task kept alive
    would stay in asyncio's weak registry, and its count in the weight
    would depend on which tasks the last ticks visited -- rounds restarted
    by it overcounted short-lived tasks by 3.6% (100 runs of the rotation
    test: mean 1451 of 1400, sd 118; held weakly: 1402, sd 91)."""

    def __init__(self, max_tasks: int = 0) -> None:
        self.max_tasks = max_tasks
        self._order: list[int] = []             # this round's slices, in visiting order
        self._next = 0                          # how many of them were visited
        self._random = random.Random()          # not the application's generator
        # id(task) -> (weakref to the task, the future it waited on, its capture): from the
        # last round through the registry, and from this round so far
        self._blocked: dict[int, tuple[Any, Any, Capture]] = {}
        self._seen: dict[int, tuple[Any, Any, Capture]] = {}
        self._registry = Registry()

    def tick(self, tracker: SpanTracker, out: list[Capture]) -> int:
        """Append ``((loop, task name), frames, span link)`` for every
        suspended task visited this tick to ``out`` (``frames``: ``[code,
        f_lasti, ...]``, outermost coroutine first; named and counted later,
        :mod:`telegen.sdk.fold`);
        returns the weight of each (see the class notes).

        A task still blocked on the future it waited on when last visited has
        not run since (see the module notes): its capture from then is
        reused -- frames and span link (its spans start and end as it runs)
        -- so it costs a dict lookup and two identity checks. A task with no
        future to wait on is either ready to run or running now (its
        coroutine says which); a running one is on its thread's stack
        already."""
        refs = self._registry.refs()
        k = self.max_tasks
        weight = -(-len(refs) // k) if k and len(refs) > k else 1
        if weight != len(self._order) or self._next >= weight:     # a new round
            self._order = self._random.sample(range(weight), weight)
            self._next = 0
        if weight > 1:
            refs = refs[self._order[self._next]::weight]
        self._next += 1
        old, seen = self._blocked, self._seen
        spans = tracker.tasks
        coro_t, gen_t, ref_t = CoroutineType, GeneratorType, weakref.ref
        append = out.append
        for task in refs:
            if type(task) is ref_t:
                task = task()
                if task is None:
                    continue
            key = id(task)
            try:
                waiter = task._fut_waiter
                if waiter is not None:
                    hit = seen.get(key) or old.get(key)
                    if hit is not None and hit[1] is waiter and hit[0]() is task:
                        seen[key] = hit
                        append(hit[2])
                        continue
                obj = task.get_coro()
                tp = type(obj)
                if (obj.cr_running if tp is coro_t else obj.gi_running if tp is gen_t
                        else getattr(obj, "cr_running", False)):
                    continue                    # running: on its thread's stack
                frames: list[Any] = []
                while obj is not None:      # finite: a coroutine cannot await itself
                    if tp is coro_t:
                        frame = obj.cr_frame
                        obj = obj.cr_await
                    elif tp is gen_t:
                        frame = obj.gi_frame
                        obj = obj.gi_yieldfrom
                    else:                   # async generators, other coroutine types
                        frame = _frame_of(obj)
                        obj = _awaited(obj)
                    if frame is None:
                        break
                    frames.append(frame.f_code)
                    frames.append(frame.f_lasti)
                    tp = type(obj)
                if not frames:              # done
                    continue
                entry = spans.get(key)
                link = entry[1][-1] if entry is not None and entry[1] and entry[0]() is task \
                    else None
                capture = ((task.get_loop(), task.get_name()), frames, link)
                if waiter is not None:
                    seen[key] = (ref_t(task), waiter, capture)
                append(capture)
            except Exception:
                continue
        if self._next >= weight:                # round complete
            self._blocked, self._seen = seen, {}
        return weight
