"""Engine stacks -> pdata profiles: one ``cpu`` (or ``wall`` with idle
threads) profile per process and window."""

from __future__ import annotations

from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, ValueType, make_labels
from telegen.receivers.python.engine import RawFrame, ThreadStack
from telegen.sdk.names import function_name
from telegen.semconv import THREAD_ID, THREAD_NAME

WALL = (ValueType("samples", "count"), ValueType("wall", "nanoseconds"))


class FrameCache:
    """Interns pdata frames per raw frame (a window repeats the same few)."""

    def __init__(self, maxsize: int = 50_000) -> None:
        self._frames: dict[RawFrame, Frame] = {}
        self._max = maxsize

    def frame(self, raw: RawFrame) -> Frame:
        hit = self._frames.get(raw)
        if hit is not None:
            return hit
        if raw.native:
            frame = Frame(FrameKind.NATIVE, lines=(Line(raw.function, raw.file, raw.line),))
        else:
            name = function_name("", raw.function, raw.file)
            frame = Frame(FrameKind.PYTHON, lines=(Line(name, raw.file, raw.line),))
        if len(self._frames) >= self._max:
            self._frames.clear()
        self._frames[raw] = frame
        return frame


def build_profile(stacks: list[ThreadStack], *, rate: int, start_ns: int, duration_ns: int,
                  resource: dict[str, str | int], wall: bool, frames: FrameCache) -> Profile:
    period = 1_000_000_000 // rate
    types = WALL if wall else CPU
    profile = Profile(name="wall" if wall else "cpu", sample_types=types,
                      period_type=types[1], period=period, start_ns=start_ns,
                      duration_ns=duration_ns, resource=resource,
                      default_sample_type=types[1].type)
    for st in stacks:     # the process is the resource's; a sample says which thread
        stack = tuple(frames.frame(f) for f in st.frames)
        labels = make_labels(**{THREAD_ID: st.tid or None, THREAD_NAME: st.thread_name})
        profile.add(stack, [st.count, st.count * period], labels)
    return profile
