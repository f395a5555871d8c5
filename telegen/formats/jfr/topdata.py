"""JFR events to telegen profiles.

=========  ==============================  ==========================================
profile    events                          values
=========  ==============================  ==========================================
cpu        jdk.ExecutionSample             samples/count, cpu/nanoseconds (period)
alloc      jdk.ObjectAllocationSample      alloc_objects/count, alloc_space/bytes
           (TLAB events when a recording   (weight; tlabSize / allocationSize)
           has no allocation samples,
           e.g. async-profiler)
mutex      jdk.JavaMonitorEnter            contentions/count, delay/nanoseconds
park       jdk.ThreadPark                  contentions/count, delay/nanoseconds
gc         jdk.GarbageCollection           gc/count, pause/nanoseconds (sumOfPauses)
=========  ==============================  ==========================================

Java frames are ``FrameKind.JVM`` with one :class:`Line` each: ``function``
is ``package.Class.method``, ``line`` the source line, and ``system_name``
the JVM signature plus the frame type in brackets, e.g.
``Workload.hotMethod(J)J [JIT compiled]`` (types: Interpreted, JIT compiled,
Inlined, Native). Samples carry ``thread.name``, ``thread.id`` (OS) and
``jvm.thread.id`` (Java) labels; gc samples ``jvm.gc.name`` and
``jvm.gc.cause`` instead, with a
two-frame stack ``collector`` -> ``cause``. The cpu period comes from the
recording's ``jdk.ActiveSetting`` for the sampler (``period``), else the
caller's default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from telegen.formats.jfr.chunk import Chunk, Event
from telegen.formats.jfr.jdk import JavaFrame, JdkView, StackTrace
from telegen.formats.jfr.stream import events
from telegen.pdata import (
    ALLOC,
    CPU,
    MUTEX,
    Frame,
    FrameKind,
    Labels,
    Line,
    Profile,
    ValueType,
    make_labels,
)
from telegen.semconv import JVM_GC_CAUSE, JVM_GC_NAME, JVM_THREAD_ID, THREAD_ID, THREAD_NAME

GC = (ValueType("gc", "count"), ValueType("pause", "nanoseconds"))
PROFILE_TYPES = ("cpu", "alloc", "mutex", "park", "gc")
EVENTS = {
    "cpu": ("jdk.ExecutionSample",),
    "alloc": ("jdk.ObjectAllocationSample", "jdk.ObjectAllocationInNewTLAB",
              "jdk.ObjectAllocationOutsideTLAB"),
    "mutex": ("jdk.JavaMonitorEnter",),
    "park": ("jdk.ThreadPark",),
    "gc": ("jdk.GarbageCollection",),
}
_SAMPLE_TYPES = {"cpu": CPU, "alloc": ALLOC, "mutex": MUTEX, "park": MUTEX, "gc": GC}
_DEFAULT_TYPE = {"cpu": "cpu", "alloc": "alloc_space", "mutex": "delay", "park": "delay",
                 "gc": "pause"}
_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
             "h": 3_600_000_000_000, "d": 86_400_000_000_000}
_TIMESPAN_NS = {"NANOSECONDS": 1, "MICROSECONDS": 1_000, "MILLISECONDS": 1_000_000,
                "SECONDS": 1_000_000_000}

Pending = tuple[str, tuple[Frame, ...], list[int], Labels]


def parse_period_ns(text: str) -> int | None:
    """``"10 ms"`` -> 10_000_000; None for anything else (``off``, ``everyChunk``)."""
    parts = text.strip().split()
    if len(parts) == 2 and parts[1] in _UNITS_NS:
        try:
            value = float(parts[0])
        except ValueError:
            return None
        ns = int(value * _UNITS_NS[parts[1]])
        return ns if ns > 0 else None
    return None


class ProfileBuilder:
    """Accumulates the events of many chunks into one profile per type."""

    def __init__(self, *, types: Iterable[str] = PROFILE_TYPES,
                 resource: dict[str, str | int] | None = None,
                 default_period_ns: int = 20_000_000) -> None:
        self.types = tuple(t for t in PROFILE_TYPES if t in set(types))
        self.resource = dict(resource or {})
        self.default_period_ns = default_period_ns
        self.period_ns = 0
        self.start_ns = 0
        self.end_ns = 0
        self.events = 0
        self._profiles: dict[str, Profile] = {}
        self._names = frozenset(n for t in self.types for n in EVENTS[t]) | {"jdk.ActiveSetting"}
        self._frames: dict[JavaFrame, Frame] = {}
        self._stacks: dict[tuple[JavaFrame, ...], tuple[Frame, ...]] = {}

    def add_chunk(self, chunk: Chunk) -> int:
        """Add one chunk's events; all or nothing (JfrError leaves no trace)."""
        view = JdkView(chunk)
        has_samples = "jdk.ObjectAllocationSample" in chunk.metadata.by_name
        pending: list[Pending] = []
        period = 0
        sampler = chunk.metadata.by_name.get("jdk.ExecutionSample")
        for event in events(chunk, self._names):
            name = event.name
            if name == "jdk.ActiveSetting":
                if sampler is not None and event.values.get("id") == sampler.id \
                        and chunk.text(event.values.get("name")) == "period":
                    period = parse_period_ns(chunk.text(event.values.get("value")) or "") \
                        or period
                continue
            if name.startswith("jdk.ObjectAllocation") and name != \
                    "jdk.ObjectAllocationSample" and has_samples:
                continue
            got = self._convert(event, view)
            if got is not None:
                pending.append(got)
        for kind, stack, values, labels in pending:      # merged now: memory stays bounded
            prof = self._profiles.get(kind)
            if prof is None:
                prof = self._profiles[kind] = self._profile(kind, 0)
            prof.add(stack, values, labels)
        self.events += len(pending)
        if period:
            self.period_ns = period
        h = chunk.header
        start, end = h.start_ns, h.start_ns + h.duration_ns
        self.start_ns = min(self.start_ns or start, start)
        self.end_ns = max(self.end_ns, end)
        return len(pending)

    def _convert(self, event: Event, view: JdkView) -> Pending | None:
        v, chunk = event.values, event.chunk
        name = event.name
        if name == "jdk.GarbageCollection":
            collector = chunk.text(event.get("name")) or "unknown"
            cause = chunk.text(event.get("cause")) or "unknown"
            pause = _timespan_ns(event, "sumOfPauses")
            stack: tuple[Frame, ...] = (self._frame(JavaFrame(cause, "", 0, 0, "")),
                     self._frame(JavaFrame(collector, "", 0, 0, "")))
            return ("gc", stack, [1, pause], make_labels(**{JVM_GC_NAME: collector,
                                                           JVM_GC_CAUSE: cause}))
        thread = view.thread(v.get("sampledThread", v.get("eventThread")))
        labels = make_labels(**{THREAD_NAME: thread.name, JVM_THREAD_ID: thread.java_id or None,
                                THREAD_ID: thread.os_id or None})
        stack = self._stack(view.stack_trace(v.get("stackTrace")))
        if name == "jdk.ExecutionSample":
            return ("cpu", stack, [1, 0], labels)          # ns filled in by build()
        if name == "jdk.ObjectAllocationSample":
            return ("alloc", stack, [1, _int(v.get("weight"))], labels)
        if name == "jdk.ObjectAllocationInNewTLAB":
            return ("alloc", stack, [1, _int(v.get("tlabSize"))], labels)
        if name == "jdk.ObjectAllocationOutsideTLAB":
            return ("alloc", stack, [1, _int(v.get("allocationSize"))], labels)
        if name == "jdk.JavaMonitorEnter":
            return ("mutex", stack, [1, _timespan_ns(event, "duration")], labels)
        if name == "jdk.ThreadPark":
            return ("park", stack, [1, _timespan_ns(event, "duration")], labels)
        return None

    def _frame(self, jf: JavaFrame) -> Frame:
        got = self._frames.get(jf)
        if got is None:
            system = f"{jf.function}{jf.descriptor} [{jf.type}]" if jf.type else ""
            got = Frame(FrameKind.JVM, lines=(Line(jf.function, line=max(jf.line, 0),
                                                   system_name=system),))
            self._frames[jf] = got
        return got

    def _stack(self, trace: StackTrace) -> tuple[Frame, ...]:
        got = self._stacks.get(trace.frames)
        if got is None:
            frames = [self._frame(f) for f in trace.frames]
            if trace.truncated:
                frames.append(Frame(FrameKind.TRUNCATED))
            got = self._stacks[trace.frames] = tuple(frames)
        return got

    def build(self) -> list[Profile]:
        """One profile per requested type that saw events (cpu first)."""
        period = self.period_ns or self.default_period_ns
        out = []
        for kind in self.types:
            p = self._profiles.get(kind)
            if p is None:
                continue
            p.start_ns, p.duration_ns = self.start_ns, max(self.end_ns - self.start_ns, 0)
            if kind == "cpu":
                p.period = period
                for sample in p:
                    sample.values[1] = sample.values[0] * period
            out.append(p)
        return out

    def _profile(self, kind: str, period: int) -> Profile:
        types = _SAMPLE_TYPES[kind]
        return Profile(name=kind, sample_types=types,
                       period_type=types[1] if kind == "cpu" else types[0],
                       period=period if kind == "cpu" else 1, start_ns=self.start_ns,
                       duration_ns=max(self.end_ns - self.start_ns, 0),
                       resource=self.resource, default_sample_type=_DEFAULT_TYPE[kind])


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _timespan_ns(event: Event, field: str) -> int:
    value = _int(event.values.get(field))
    for fd in event.type.fields:
        if fd.name == field:
            unit = fd.annotations.get("jdk.jfr.Timespan", "NANOSECONDS")
            if unit == "TICKS":
                return event.chunk.ticks_to_ns(value)
            return value * _TIMESPAN_NS.get(unit, 1)
    return value
