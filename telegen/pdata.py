"""The profile data model passed between components.

Close to pprof / OTLP profiles, but cheap to aggregate in Python:

* :class:`Frame` is immutable and interned (equal content, one object), so a
  stack is a plain tuple of frames (leaf first) hashed at C speed, and identical
  stacks aggregate through a dict.
* :class:`Profile` holds one window of one profile type (one or more value
  columns, e.g. ``samples/count`` + ``cpu/nanoseconds``) for one resource, and
  merges identical (stack, labels, link) samples on insert.
* :class:`Profiles` is what flows through a pipeline: a list of profiles.

Receivers produce raw frames (address + mapping); the ``symbolize`` processor
fills in ``lines``; exporters translate to their wire format.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

LabelValue = str | int
Labels = tuple[tuple[str, LabelValue], ...]


class FrameKind(StrEnum):
    NATIVE = "native"
    KERNEL = "kernel"
    PYTHON = "python"
    JVM = "jvm"
    GO = "go"
    JIT = "jit"
    TRUNCATED = "truncated"   # marks a stack that stopped early

    # str's own hash (C): Enum's is a Python call on the name, and a member must
    # hash like the string it equals anyway
    __hash__ = str.__hash__


@dataclass(frozen=True, slots=True)
class ValueType:
    type: str
    unit: str

    def __str__(self) -> str:
        return f"{self.type}/{self.unit}"

    @classmethod
    def parse(cls, text: str) -> ValueType:
        type_, _, unit = text.partition("/")
        return cls(type_, unit or "count")


@dataclass(frozen=True, slots=True)
class Mapping:
    """A mapped object file: where it sits in the process and what it is."""

    start: int = 0
    limit: int = 0
    offset: int = 0
    file: str = ""
    build_id: str = ""
    has_functions: bool = False
    has_filenames: bool = False
    has_line_numbers: bool = False
    has_inline_frames: bool = False


@dataclass(frozen=True, slots=True)
class Line:
    """One function in a frame; several when callees were inlined."""

    function: str
    file: str = ""
    line: int = 0
    system_name: str = ""    # mangled / raw name when it differs
    start_line: int = 0


_FRAMES: dict[tuple[object, ...], weakref.ref[Frame]] = {}   # content -> the one live frame
_FRAMES_LOCK = threading.Lock()


def _forget_frame(key: tuple[object, ...]) -> Callable[[object], None]:
    def forget(ref: object) -> None:
        # a newer frame of the same content may already sit there: remove only ours
        if _FRAMES.get(key) is ref:
            _FRAMES.pop(key, None)
    return forget


class Frame:
    """One stack frame. Immutable and interned: frames of equal content are one
    object, so equality and hashing are identity's (C speed: a 50-frame stack
    hashed 11 µs with a cached hash read by Python, ~1 µs by identity).

    ``lines`` is innermost first, as in pprof: ``lines[0]`` is the inlined
    callee at the address, ``lines[-1]`` the function the code belongs to.
    """

    __slots__ = ("kind", "address", "mapping", "lines", "__weakref__")
    kind: FrameKind
    address: int
    mapping: Mapping | None
    lines: tuple[Line, ...]

    def __new__(cls, kind: FrameKind = FrameKind.NATIVE, address: int = 0,
                mapping: Mapping | None = None, lines: tuple[Line, ...] = ()) -> Frame:
        lines = tuple(lines)
        key = (kind, address, mapping, lines)
        ref = _FRAMES.get(key)
        frame = ref() if ref is not None else None
        if frame is None:
            with _FRAMES_LOCK:     # two threads making the same frame get one object
                ref = _FRAMES.get(key)
                frame = ref() if ref is not None else None
                if frame is None:
                    frame = object.__new__(cls)
                    set_ = object.__setattr__
                    set_(frame, "kind", kind)
                    set_(frame, "address", address)
                    set_(frame, "mapping", mapping)
                    set_(frame, "lines", lines)
                    _FRAMES[key] = weakref.ref(frame, _forget_frame(key))
        return frame

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Frame is immutable")

    def __copy__(self) -> Frame:
        return self

    def __deepcopy__(self, memo: object) -> Frame:
        return self

    def __reduce__(self) -> tuple[object, ...]:
        return (Frame, (self.kind, self.address, self.mapping, self.lines))

    def __repr__(self) -> str:
        return f"Frame({self.kind.value}, {self.name!r})"

    def with_lines(self, lines: tuple[Line, ...], mapping: Mapping | None = None) -> Frame:
        return Frame(self.kind, self.address, mapping or self.mapping, lines)

    @property
    def name(self) -> str:
        """The outermost function name, or ``binary+0xoffset`` when unsymbolized."""
        if self.lines:
            return self.lines[-1].function
        return fallback_name(self.address, self.mapping)

    def function_names(self) -> list[str]:
        return [ln.function for ln in self.lines] or [self.name]


def fallback_name(address: int, mapping: Mapping | None) -> str:
    if mapping is None or not mapping.file:
        return f"0x{address:x}" if address else "[unknown]"
    base = mapping.file.rsplit("/", 1)[-1]
    return f"{base}+0x{address - mapping.start + mapping.offset:x}"


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: str   # 32 hex chars
    span_id: str    # 16 hex chars


@dataclass(slots=True)
class Sample:
    stack: tuple[Frame, ...]             # leaf first
    values: list[int]
    labels: Labels = ()                  # sorted (key, value) pairs
    timestamps: list[int] = field(default_factory=list)   # unix ns, one per event
    link: SpanLink | None = None

    @property
    def key(self) -> tuple[tuple[Frame, ...], Labels, SpanLink | None]:
        return (self.stack, self.labels, self.link)


def make_labels(**labels: LabelValue | None) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if v is not None and v != ""))


# Where a profile's frames come from (``Profile.origin``). Not an attribute of
# the data: never encoded, never decoded, so a sender cannot set it.
OBSERVED = "observed"   # built by this agent from processes it watched itself
PUSHED = "pushed"       # decoded from bytes someone else sent or wrote (OTLP, pprof)


class Profile:
    """One window of one profile type for one resource. Merges identical samples.

    ``origin`` is :data:`OBSERVED` unless a decoder marked it :data:`PUSHED`:
    then mapping paths, pids and addresses in it are the sender's words, not
    facts about this host (the ``symbolize`` processor uses build-ids only)."""

    def __init__(self, *, name: str, sample_types: Iterable[ValueType],
                 period_type: ValueType | None = None, period: int = 0,
                 start_ns: int = 0, duration_ns: int = 0,
                 resource: dict[str, LabelValue] | None = None,
                 default_sample_type: str = "", comments: Iterable[str] = ()) -> None:
        self.name = name                          # profile type: cpu, off_cpu, alloc, ...
        self.sample_types = tuple(sample_types)
        self.period_type = period_type
        self.period = period
        self.start_ns = start_ns
        self.duration_ns = duration_ns
        self.resource: dict[str, LabelValue] = dict(resource or {})
        self.default_sample_type = default_sample_type
        self.comments = list(comments)
        self.origin = OBSERVED
        self._samples: dict[tuple[object, ...], Sample] = {}

    # -- samples -----------------------------------------------------------------
    @property
    def samples(self) -> list[Sample]:
        return list(self._samples.values())

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples.values())

    def add(self, stack: tuple[Frame, ...], values: list[int], labels: Labels = (),
            timestamps: Iterable[int] = (), link: SpanLink | None = None) -> None:
        self.add_sample(Sample(stack, list(values), labels, list(timestamps), link))

    def add_sample(self, sample: Sample) -> None:
        if len(sample.values) != len(self.sample_types):
            raise ValueError(f"sample has {len(sample.values)} values, profile "
                             f"{self.name} has {len(self.sample_types)} sample types")
        key = sample.key
        have = self._samples.get(key)
        if have is None:
            self._samples[key] = sample
            return
        have.values = [a + b for a, b in zip(have.values, sample.values, strict=True)]
        if sample.timestamps:
            have.timestamps.extend(sample.timestamps)

    def replace_samples(self, samples: Iterable[Sample]) -> None:
        """Swap in new samples (re-merging any that became identical)."""
        self._samples = {}
        for s in samples:
            self.add_sample(s)

    # -- whole-profile helpers ---------------------------------------------------
    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    def merge_key(self) -> tuple[object, ...]:
        """Profiles with equal keys can be merged into one (see ``merge``)."""
        return (self.name, self.sample_types, self.period_type, self.period,
                tuple(sorted(self.resource.items())), self.origin)

    def merge(self, other: Profile) -> None:
        if other.merge_key() != self.merge_key():
            raise ValueError("cannot merge profiles of different type or resource")
        start = min(self.start_ns or other.start_ns, other.start_ns or self.start_ns)
        end = max(self.end_ns, other.end_ns)
        self.start_ns, self.duration_ns = start, end - start
        for s in other:
            self.add_sample(Sample(s.stack, list(s.values), s.labels,
                                   list(s.timestamps), s.link))

    def totals(self) -> list[int]:
        sums = [0] * len(self.sample_types)
        for s in self._samples.values():
            for i, v in enumerate(s.values):
                sums[i] += v
        return sums

    def value_index(self, type_name: str | None = None) -> int:
        """Index of a sample type by name (``cpu`` or ``cpu/nanoseconds``)."""
        want = type_name or self.default_sample_type
        if want:
            for i, vt in enumerate(self.sample_types):
                if want in (vt.type, str(vt)):
                    return i
            if type_name:
                names = ", ".join(str(v) for v in self.sample_types)
                raise KeyError(f"no sample type {type_name!r} (have {names})")
        return len(self.sample_types) - 1

    def copy(self) -> Profile:
        dup = copy.copy(self)
        dup.resource = dict(self.resource)
        dup.comments = list(self.comments)
        dup._samples = {k: Sample(s.stack, list(s.values), s.labels, list(s.timestamps), s.link)
                        for k, s in self._samples.items()}
        return dup

    def __repr__(self) -> str:
        types = ",".join(str(t) for t in self.sample_types)
        return f"Profile({self.name}, [{types}], {len(self)} samples, {self.resource})"


class Profiles:
    """What flows through a pipeline: a batch of profiles."""

    __slots__ = ("profiles",)

    def __init__(self, profiles: Iterable[Profile] = ()) -> None:
        self.profiles = list(profiles)

    def __iter__(self) -> Iterator[Profile]:
        return iter(self.profiles)

    def __len__(self) -> int:
        return len(self.profiles)

    def sample_count(self) -> int:
        return sum(len(p) for p in self.profiles)

    def copy(self) -> Profiles:
        return Profiles(p.copy() for p in self.profiles)


# Sample-type conventions (Go/pprof names) and the profile type each implies.
CPU = (ValueType("samples", "count"), ValueType("cpu", "nanoseconds"))
OFF_CPU = (ValueType("samples", "count"), ValueType("off_cpu", "nanoseconds"))
ALLOC = (ValueType("alloc_objects", "count"), ValueType("alloc_space", "bytes"))
INUSE = (ValueType("inuse_objects", "count"), ValueType("inuse_space", "bytes"))
MUTEX = (ValueType("contentions", "count"), ValueType("delay", "nanoseconds"))
GOROUTINE = (ValueType("goroutine", "count"),)

_TYPE_BY_VALUE = {
    "cpu": "cpu", "off_cpu": "off_cpu", "alloc_space": "alloc", "alloc_objects": "alloc",
    "inuse_space": "inuse", "inuse_objects": "inuse", "delay": "mutex",
    "contentions": "mutex", "goroutine": "goroutine", "goroutines": "goroutine",
    "wall": "wall", "space": "inuse", "objects": "inuse",
}


def infer_profile_name(sample_types: Iterable[ValueType]) -> str:
    """Profile type from its sample types, for data that did not say (pprof files)."""
    types = [vt.type for vt in sample_types]
    for t in reversed(types):
        if t in _TYPE_BY_VALUE:
            return _TYPE_BY_VALUE[t]
    return types[-1] if types else "unknown"
