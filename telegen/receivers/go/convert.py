"""What each Go endpoint becomes in pdata.

=========  ===========================  ==========  ==========================
switch     endpoint                     profile     kind
=========  ===========================  ==========  ==========================
cpu        /profile?seconds=N           cpu         window (Go measures it)
memory     /heap                        inuse       snapshot (as of last GC)
memory     /heap (same response)        alloc       cumulative -> delta
goroutine  /goroutine                   goroutine   snapshot
mutex      /mutex                       mutex       cumulative -> delta
block      /block                       block       cumulative -> delta
=========  ===========================  ==========  ==========================

``/allocs`` serves the very same profile as ``/heap`` (only the default sample
type differs), so one ``/heap`` request gives both ``inuse`` and ``alloc``:
half the requests, and both views of one moment. Sample types stay as Go
writes them; frames become ``FrameKind.GO`` and keep function, file and line;
sample labels (``pprof.Do`` labels such as ``span_id``) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegen.pdata import Frame, FrameKind, LabelValue, Profile, ValueType


@dataclass(frozen=True)
class Endpoint:
    switch: str        # config switch
    path: str          # under the target's /debug/pprof
    lane: str          # "cpu" (long window) or "snapshot"


ENDPOINTS = (
    Endpoint("cpu", "profile", "cpu"),
    Endpoint("memory", "heap", "snapshot"),
    Endpoint("goroutine", "goroutine", "snapshot"),
    Endpoint("mutex", "mutex", "snapshot"),
    Endpoint("block", "block", "snapshot"),
)
# profile name -> True when Go reports it cumulative since process start
CUMULATIVE = {"cpu": False, "inuse": False, "goroutine": False,
              "alloc": True, "mutex": True, "block": True}
_HEAP_SPLIT = (("inuse", ("inuse_objects", "inuse_space")),
               ("alloc", ("alloc_objects", "alloc_space")))


def convert(endpoint: Endpoint, raw: Profile, resource: dict[str, LabelValue]) -> list[Profile]:
    """Named pdata profiles (still cumulative where Go's are) from one response."""
    frames: dict[Frame, Frame] = {}
    if endpoint.path == "heap":
        return [p for name, types in _HEAP_SPLIT
                if (p := _select(raw, name, types, resource, frames)) is not None]
    name = endpoint.path if endpoint.path != "profile" else "cpu"
    return [_columns(raw, name, list(range(len(raw.sample_types))), resource, frames)]


def _select(raw: Profile, name: str, types: tuple[str, ...],
            resource: dict[str, LabelValue], frames: dict[Frame, Frame]) -> Profile | None:
    index = {vt.type: i for i, vt in enumerate(raw.sample_types)}
    if not all(t in index for t in types):
        return None
    return _columns(raw, name, [index[t] for t in types], resource, frames)


def _columns(raw: Profile, name: str, columns: list[int], resource: dict[str, LabelValue],
             frames: dict[Frame, Frame]) -> Profile:
    types: list[ValueType] = [raw.sample_types[i] for i in columns]
    default = raw.default_sample_type
    if default not in {vt.type for vt in types}:
        default = types[-1].type
    out = Profile(name=name, sample_types=types, period_type=raw.period_type,
                  period=raw.period, start_ns=raw.start_ns, duration_ns=raw.duration_ns,
                  resource={**raw.resource, **resource}, default_sample_type=default,
                  comments=raw.comments)
    for s in raw:
        values = [s.values[i] for i in columns]
        if not any(values):
            continue
        stack = tuple(_go_frame(f, frames) for f in s.stack)
        out.add(stack, values, s.labels, link=s.link)
    return out


def _go_frame(frame: Frame, memo: dict[Frame, Frame]) -> Frame:
    got = memo.get(frame)
    if got is None:
        got = memo[frame] = frame if frame.kind is FrameKind.GO or not frame.lines else \
            Frame(FrameKind.GO, frame.address, frame.mapping, frame.lines)
    return got
