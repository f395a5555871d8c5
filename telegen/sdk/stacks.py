"""A thread's stack as frame keys, walking at each tick only what is new.

Between two ticks a busy thread returns from a few frames and calls a few
others; the frames below them -- the thread's bootstrap, the event loop,
the request dispatcher -- are the same frame objects, still executing the
same call. So a walk from the top frame stops at the first frame that was on
the thread's stack at the last tick: everything from there to the root is
unchanged and its keys are reused (one tuple concatenation). That is sound
for an ordinary function's frame: while it executes, its callers are fixed
and suspended at the call into it. It is not for a generator's or a
coroutine's frame, which another caller may resume; the walk goes on past
those. A frame object cannot be replaced by another at the same address
while the walk state holds it, and the state holds only the frames on the
stack at the last tick. Compatible with Python 3.8+.
"""

from __future__ import annotations

from types import FrameType
from typing import TYPE_CHECKING

from telegen.sdk import codes

if TYPE_CHECKING:
    from telegen.sdk.codes import FrameKey, Names

    # frames root first, id(frame) -> its index there, the keys (leaf first)
    Walk = tuple[list[FrameType], dict[int, int], tuple[FrameKey, ...]]

MAX_DEPTH = 512
# generator, coroutine, iterable coroutine, async generator: frames that can be
# suspended and resumed by another caller (their f_back changes)
SUSPENDABLE = 0x20 | 0x80 | 0x100 | 0x200


def walk(frame: FrameType | None, last: Walk | None,
         names: Names) -> tuple[tuple[FrameKey, ...], Walk | None]:
    """The keys of the stack whose top is ``frame``, leaf first, and the walk
    state for the next tick (None for a stack deeper than ``MAX_DEPTH``,
    whose root side is cut off). ``last``: this thread's state from the last
    tick. An unchanged stack gives the same key tuple object back."""
    frames, index, old = last if last is not None else ([], {}, ())
    keys: list[FrameKey] = []
    new: list[FrameType] = []
    at = -1                                     # index in ``frames`` of the frame reached
    get = index.get
    while frame is not None:
        i = get(id(frame))
        if i is not None and frames[i] is frame and not frame.f_code.co_flags & SUSPENDABLE:
            at = i
            break
        code = frame.f_code
        if id(code) not in names:
            codes.register(names, code, frame)
        keys.append((id(code), frame.f_lasti))
        new.append(frame)
        if len(keys) >= MAX_DEPTH:
            return tuple(keys), None
        frame = frame.f_back
    if at < 0:
        frames, index, below = [], {}, ()
    else:
        assert frame is not None
        j = len(old) - 1 - at                   # the reached frame's place in ``old``
        here = (id(frame.f_code), frame.f_lasti)
        if not keys and j == 0 and old[0] == here:
            return old, last                    # the thread has not moved
        below = old[j + 1:]
        keys.append(here)
        for gone in frames[at + 1:]:
            del index[id(gone)]
        del frames[at + 1:]
    for f in reversed(new):
        index[id(f)] = len(frames)
        frames.append(f)
    stack = tuple(keys) + below
    if len(stack) > MAX_DEPTH:
        return stack[:MAX_DEPTH], None
    return stack, (frames, index, stack)
