"""What the ticks captured, turned into samples and counted.

A tick runs with the application's caches cold: on the VM this was built on,
the sampler's code took ~40 us at a tick against ~2 us run again at once,
its cost set by how many distinct objects it touches, not by how much it
computes. So a tick only copies what will change -- per thread
``(thread, frames, span link)``, per visited task ``((loop, task name),
frames, span link)``, ``frames`` a flat list ``[code, f_lasti, code, f_lasti, ...]`` (a thread's
leaf first, a task's await chain outermost first) -- and everything else
(naming code objects, frame keys, thread and task names, counting) happens
here, a few times a second in the sampler thread, in one warm pass. A frame
list the ticks reused (an idle thread, a task still blocked on the same
future) is turned into a key once per fold. Compatible with Python 3.8+.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from telegen.sdk import codes
from telegen.sdk.spans import link_of

if TYPE_CHECKING:
    from telegen.sdk.codes import FrameKey, Names, SampleKey
    from telegen.sdk.spans import SpanCtx
    from telegen.sdk.stats import Stats

    # (threading.Thread -- or its ident if threading does not know it -- or
    # an asyncio task's (loop, name), frames, span link)
    Capture = tuple[Any, list[Any], SpanCtx | None]
    # captures of one tick: (weight, of tasks?, captures)
    Pending = list[tuple[int, bool, list[Capture]]]

MAX_DEPTH = 512


class Folder:
    """Counts captures into a buffer's ``Counter``, at most ``max_stacks``
    distinct samples (the samples of new ones beyond it are dropped and
    counted in ``stats``)."""

    def __init__(self, stats: Stats, max_stacks: int) -> None:
        self.stats = stats
        self.max_stacks = max_stacks
        self.modules = codes.Modules()

    def fold(self, pending: Pending, counts: Counter[SampleKey], names: Names) -> None:
        threads = threading._active  # type: ignore[attr-defined]
        keys: dict[int, tuple[FrameKey, ...]] = {}     # id(frames) -> key, this fold
        where: dict[int, tuple[int, str]] = {}          # id(thread or loop) -> (tid, name)
        links: dict[int, Any] = {}                      # id(span) -> its ids, this fold
        for weight, of_tasks, captured in pending:
            samples: list[SampleKey] = []
            for owner, frames, span in captured:
                try:
                    link = None
                    if span is not None:
                        link = links.get(id(span), False)
                        if link is False:
                            link = links[id(span)] = link_of(span)
                    stack = keys.get(id(frames))
                    if stack is None:
                        stack = keys[id(frames)] = self.key(frames, names, of_tasks)
                    if of_tasks:
                        loop, task_name = owner
                        place = where.get(id(loop))
                        if place is None:
                            place = where[id(loop)] = _thread(
                                getattr(loop, "_thread_id", None) or 0, threads)
                        samples.append((place[0], place[1], task_name, stack, link))
                    else:
                        place = where.get(id(owner))
                        if place is None:
                            place = where[id(owner)] = (owner, "") if type(owner) is int \
                                else _named(owner)
                        samples.append((place[0], place[1], "", stack, link))
                except Exception:           # a task-like object that is not quite one
                    self.stats.errors += 1
            self.add(counts, samples, weight)

    def key(self, frames: list[Any], names: Names, outer_first: bool) -> tuple[FrameKey, ...]:
        """``(id(code), f_lasti)`` pairs, leaf first, each code named in ``names``."""
        out: list[FrameKey] = []
        modules, register = self.modules, codes.register
        for i in range(0, len(frames), 2):
            code = frames[i]
            if id(code) not in names:
                register(names, code, modules)
            out.append((id(code), frames[i + 1]))
        if outer_first:
            out.reverse()
        return tuple(out[:MAX_DEPTH])

    def add(self, counts: Counter[SampleKey], found: list[SampleKey], weight: int) -> None:
        """Count ``found``, ``weight`` each; a new sample beyond ``max_stacks`` is dropped."""
        get, room = counts.get, self.max_stacks - len(counts)
        dropped = 0
        for key in found:
            n = get(key)
            if n is not None:
                counts[key] = n + weight
            elif room > 0:
                counts[key] = weight
                room -= 1
            else:
                dropped += weight
        stats = self.stats
        stats.samples += len(found) * weight - dropped
        stats.dropped_samples += dropped


def _thread(ident: int, threads: dict[int, Any]) -> tuple[int, str]:
    """(native thread id, thread name) of a thread, by its ident."""
    th = threads.get(ident)
    return _named(th) if th is not None else (ident, "")


def _named(th: threading.Thread) -> tuple[int, str]:
    return (th.native_id or th.ident or 0, th.name)
