"""Every thread's Python stack, copied for the sampler's ticks.

A tick runs with the application's caches cold, so it only copies (named
and counted later, :mod:`telegen.sdk.fold`): each thread's frames as a flat
``[code, f_lasti, code, f_lasti, ...]``, leaf first, with the thread's open
span. A thread whose top frame is the same frame object at the same
instruction as at the last tick has not moved (idle pool workers, threads
blocked in C): its copy is reused, no walk. The frame cannot be another one
at the same address (it is held until the next tick), and its callers cannot
have changed while it is alive unless it can be suspended (generators,
coroutines: always walked). The twin for asyncio tasks is
:class:`telegen.sdk.tasks.ChainWalker`. Compatible with Python 3.8+.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from telegen.sdk.fold import MAX_DEPTH

if TYPE_CHECKING:
    from telegen.sdk.fold import Capture
    from telegen.sdk.spans import SpanCtx

_MAX_FLAT = 2 * MAX_DEPTH    # a thread's captured frames: code, f_lasti, ...
# generator, coroutine, iterable coroutine, async generator: frames that can be
# suspended and resumed by another caller (their f_back changes)
_SUSPENDABLE = 0x20 | 0x80 | 0x100 | 0x200


class StackCopier:
    """``ignore``: idents of threads not to sample (the SDK's own)."""

    def __init__(self, main: int, ignore: set[int]) -> None:
        self.ignore = ignore
        self._main = main
        # ident -> (top frame, its f_lasti, captured frames) from the last tick
        self._tops: dict[int, tuple[FrameType, int, list[Any]]] = {}
        self._lone = True           # no Python threads beyond threading's (see tick)

    def tick(self, spans: dict[int, list[SpanCtx]], in_signal: bool, frame: FrameType | None,
             n: int) -> list[Capture]:
        """``(thread, frames, span)`` per thread (``threading.Thread``, or
        its ident if threading does not know it; ``spans``: the tracker's
        open spans by thread). ``in_signal``: called in the main thread's
        signal handler, whose stack is then ``frame``; while only the main
        thread and ours exist, ``sys._current_frames()`` is skipped (checked
        again at every 16th tick ``n``)."""
        threads = threading._active  # type: ignore[attr-defined]
        ignore = self.ignore
        if in_signal and self._lone and len(threads) <= len(ignore) + 1 and n & 15:
            # only the main thread and ours: no need to list every thread's frame
            frames: dict[int, FrameType | None] = {self._main: frame}
        else:
            frames = sys._current_frames()  # type: ignore[assignment]
            if in_signal:
                frames[self._main] = frame
                if len(frames) > len(threads):  # threads started without threading
                    self._lone = False
        last, seen = self._tops, {}
        found: list[Capture] = []
        top = f = None
        for ident, top in frames.items():
            if ident in ignore or top is None:
                continue
            open_ = spans.get(ident)
            link = open_[-1] if open_ else None
            lasti = top.f_lasti
            hit = last.get(ident)
            if hit is not None and hit[0] is top and hit[1] == lasti \
                    and not top.f_code.co_flags & _SUSPENDABLE:
                flat = hit[2]                   # not moved: same frames (see above)
            else:
                flat = []
                append = flat.append
                f = top
                while f is not None:
                    append(f.f_code)
                    append(f.f_lasti)
                    f = f.f_back
                    if len(flat) >= _MAX_FLAT:
                        break
            seen[ident] = (top, lasti, flat)
            th = threads.get(ident)             # named at the fold: it may have ended
            found.append((th if th is not None else ident, flat, link))
        self._tops = seen
        del frames, top, f
        return found
