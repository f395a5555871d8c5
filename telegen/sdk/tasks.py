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
check per link instead of probing attributes, records frames as
``(id(code), f_lasti)`` (see :mod:`telegen.sdk.codes`), and reuses a task's
chain from the previous tick while the task is still blocked on the same
pending future (``task._fut_waiter``): a task only runs when the future it
waits on completes, and a completed future is never waited on again, so the
same waiter means the coroutines have not moved since.
"""

from __future__ import annotations

import sys
import weakref
from types import CoroutineType, FrameType, GeneratorType
from typing import TYPE_CHECKING, Any

from telegen.sdk import codes

if TYPE_CHECKING:
    from telegen.sdk.codes import FrameKey, Names, SampleKey
    from telegen.sdk.spans import SpanTracker

_MAX_DEPTH = 256


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
    """Samples of suspended tasks: (tid, thread name, task name, await chain
    as frame keys leaf first, span link).

    ``max_tasks`` bounds the tasks visited per tick (0: every task, every
    tick). With more live tasks than that, the registry is visited in
    rotation -- ``r = ceil(tasks / max_tasks)`` ticks to go round, each tick
    one ``r``-th of it -- and every sample counts ``r``, so each task keeps
    its expected share of the time while a tick's cost stays bounded however
    many connections a service keeps parked (the way JFR's execution sampler
    bounds the threads it visits per period). The registry is copied once
    per round: a task started meanwhile waits for the next round (at most
    ``r`` ticks), and a task of 3.12's eager set is held that long."""

    def __init__(self, names: Names, max_tasks: int = 0) -> None:
        self.names = names
        self.max_tasks = max_tasks
        self._phase = 0
        # id(task) -> (task, the future it waited on, its sample): from the
        # last round through the registry, and from this round so far
        self._blocked: dict[int, tuple[Any, Any, SampleKey]] = {}
        self._seen: dict[int, tuple[Any, Any, SampleKey]] = {}
        self._registry = Registry()
        # this round: the registry's copy, its weight, id(loop) -> (tid, thread name)
        self._round: list[Any] = []
        self._weight = 1
        self._loops: dict[int, tuple[int, str]] = {}

    def tick(self, threads: dict[int, Any], tracker: SpanTracker,
             out: list[SampleKey]) -> int:
        """Append a sample for every suspended task visited this tick to
        ``out``; returns the weight of each (see the class notes).

        A task still blocked on the future it waited on when last visited has
        not run since (see the module notes): its whole sample from then is
        reused -- chain, names and span link (its spans start and end as it
        runs) -- so it costs a dict lookup and two identity checks. A task
        with no future to wait on is either ready to run or running now (its
        coroutine says which); a running one is on its thread's stack already.
        This runs at every tick with the application's caches cold, so the
        walk and the span lookup are inlined, and the registry is copied once
        per round."""
        if self._phase == 0:                    # a new round: who is there now
            self._round = self._registry.refs()
            self._loops = {}
            k = self.max_tasks
            self._weight = -(-len(self._round) // k) if k and len(self._round) > k else 1
        weight = self._weight
        refs = self._round[self._phase::weight] if weight > 1 else self._round
        self._phase += 1
        old, seen, loops = self._blocked, self._seen, self._loops
        names, register = self.names, codes.register
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
                    if hit is not None and hit[1] is waiter and hit[0] is task:
                        seen[key] = hit
                        append(hit[2])
                        continue
                chain: list[FrameKey] = []
                obj = task.get_coro()
                tp = type(obj)
                if (obj.cr_running if tp is coro_t else obj.gi_running if tp is gen_t
                        else getattr(obj, "cr_running", False)):
                    continue                    # running: on its thread's stack
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
                    code = frame.f_code
                    cid = id(code)
                    if cid not in names:
                        register(names, code, frame)
                    chain.append((cid, frame.f_lasti))
                    tp = type(obj)
                if not chain:               # done
                    continue
                if len(chain) > _MAX_DEPTH:
                    del chain[:len(chain) - _MAX_DEPTH]
                chain.reverse()
                loop = task.get_loop()
                where = loops.get(id(loop))
                if where is None:
                    where = loops[id(loop)] = _loop_thread(loop, threads)
                entry = spans.get(key)
                link = entry[1][-1] if entry is not None and entry[1] and entry[0]() is task \
                    else None
                sample = (where[0], where[1], task.get_name(), tuple(chain), link)
                if waiter is not None:
                    seen[key] = (task, waiter, sample)
                append(sample)
            except Exception:
                continue
        if self._phase >= weight:               # round complete
            self._phase = 0
            self._blocked, self._seen = seen, {}
        return weight


def _loop_thread(loop: Any, threads: dict[int, Any]) -> tuple[int, str]:
    """(native thread id, thread name) of the thread running ``loop``."""
    ident = getattr(loop, "_thread_id", None) or 0
    th = threads.get(ident)
    return (th.native_id or ident, th.name) if th is not None else (ident, "")
