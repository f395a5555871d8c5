"""One small profile of every type telegen emits, shaped by the producer that
emits it (the eBPF receiver's shapes, Go's converter over real Go profiles,
JFR's profile builder, the Python receiver's builder), for backend tests."""

from __future__ import annotations

import gzip
from pathlib import Path

from telegen.pdata import (
    ALLOC,
    CPU,
    INUSE,
    MUTEX,
    OFF_CPU,
    Frame,
    FrameKind,
    LabelValue,
    Line,
    Mapping,
    Profile,
    ValueType,
    make_labels,
)

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "testdata" / "pprof"
START = 1_700_000_000_000_000_000
WINDOW = 10_000_000_000
RESOURCE: dict[str, LabelValue] = {
    "host.name": "web-1", "process.pid": 4242, "process.executable.name": "app",
    "process.command_line": "/usr/bin/app --secret=x"}

_APP = Mapping(0x400000, 0x600000, 0, "/usr/bin/app", "8f2a41c0ffee", True, True, True, True)
_MAIN = Frame(FrameKind.NATIVE, 0x401000, _APP, (Line("main", "/src/main.c", 10),))
_WORK = Frame(FrameKind.NATIVE, 0x402000, _APP, (Line("work", "/src/work.c", 20),))
_LOCK = Frame(FrameKind.NATIVE, 0x403000, _APP, (Line("lock", "/src/lock.c", 30),))


def _ebpf_labels(tid: int, comm: str) -> tuple[tuple[str, str | int], ...]:
    attrs: dict[str, str | int] = {"process.pid": 4242, "thread.id": tid, "thread.name": comm,
                                   "process.executable.path": "/usr/bin/app"}
    return make_labels(**attrs)


def ebpf(timestamps: bool = False) -> list[Profile]:
    """cpu, off_cpu, alloc, inuse, mutex as telegen/receivers/ebpf builds them."""
    period = 10_101_010
    cpu = Profile(name="cpu", sample_types=CPU, period_type=ValueType("cpu", "nanoseconds"),
                  period=period, start_ns=START, duration_ns=WINDOW, resource=dict(RESOURCE),
                  default_sample_type="cpu")
    stamps = [START + 1_000 * i for i in range(3)] if timestamps else []
    cpu.add((_WORK, _MAIN), [3, 3 * period], _ebpf_labels(11, "worker"), stamps)
    cpu.add((_MAIN,), [2, 2 * period], _ebpf_labels(12, "main"),
            [START + 5_000, START + 6_000] if timestamps else [])
    off = Profile(name="off_cpu", sample_types=OFF_CPU,
                  period_type=ValueType("off_cpu", "nanoseconds"), period=1, start_ns=START,
                  duration_ns=WINDOW, resource=dict(RESOURCE), default_sample_type="off_cpu")
    off.add((_LOCK, _MAIN), [4, 900_000_000], _ebpf_labels(11, "worker"),
            [START + 10_000 * i for i in range(4)] if timestamps else [])
    out = [cpu, off]
    for name, types in (("alloc", ALLOC), ("inuse", INUSE)):
        mem = Profile(name=name, sample_types=types, period_type=ValueType("space", "bytes"),
                      period=512 * 1024, start_ns=START, duration_ns=WINDOW,
                      resource=dict(RESOURCE), default_sample_type=types[1].type)
        mem.add((_WORK, _MAIN), [10, 40960], _ebpf_labels(11, "worker"))
        out.append(mem)
    mutex = Profile(name="mutex", sample_types=MUTEX,
                    period_type=ValueType("contentions", "count"), period=1, start_ns=START,
                    duration_ns=WINDOW, resource=dict(RESOURCE), default_sample_type="delay")
    mutex.add((_LOCK, _WORK, _MAIN), [5, 2_000_000], _ebpf_labels(11, "worker"))
    out.append(mutex)
    return out


def go() -> list[Profile]:
    """cpu, inuse, alloc from real Go profiles; mutex, block, goroutine in
    Go's shapes; all through telegen/receivers/go/convert."""
    from telegen.formats.pprof import decode
    from telegen.receivers.go.convert import ENDPOINTS, convert

    by_path = {e.path: e for e in ENDPOINTS}
    resource: dict[str, LabelValue] = {"service.name": "checkout", "host.name": "web-1",
                                       "process.pid": 77}
    out: list[Profile] = []
    for path, file in (("profile", "go-cpu.pb.gz"), ("heap", "go-heap.pb.gz")):
        raw = decode(gzip.decompress((TESTDATA / file).read_bytes()))
        out += convert(by_path[path], raw, resource)
    fn = Frame(FrameKind.GO, 0x405000, _APP, (Line("main.serve", "/src/serve.go", 3),))
    shapes = {"mutex": (MUTEX, ValueType("contentions", "count")),
              "block": (MUTEX, ValueType("contentions", "count")),
              "goroutine": ((ValueType("goroutine", "count"),), ValueType("goroutine", "count"))}
    for path, (types, period_type) in shapes.items():
        raw = Profile(name=path, sample_types=types, period_type=period_type, period=1,
                      start_ns=START, duration_ns=WINDOW)
        raw.add((fn,), [3, 1_500_000][:len(types)], make_labels(span_id="b7ad6b7169203331"))
        out += convert(by_path[path], raw, resource)
    return out


def jfr() -> list[Profile]:
    """Every JFR profile type, as telegen/formats/jfr/topdata builds them."""
    from telegen.formats.jfr.topdata import PROFILE_TYPES, ProfileBuilder

    builder = ProfileBuilder(resource={"service.name": "orders", "process.pid": 99})
    builder.start_ns, builder.end_ns = START, START + WINDOW
    out = []
    jframe = Frame(FrameKind.JVM, 0, None, (Line("com.example.Orders.run", "Orders.java", 7),))
    for kind in PROFILE_TYPES:
        p = builder._profile(kind, 20_000_000)
        p.add((jframe,), [2, 40_000_000] if len(p.sample_types) == 2 else [2],
              make_labels(thread="main"))
        out.append(p)
    return out


def python() -> list[Profile]:
    """cpu and wall as telegen/receivers/python/convert builds them."""
    from telegen.receivers.python.convert import FrameCache, build_profile
    from telegen.receivers.python.engine import RawFrame, ThreadStack

    stacks = [ThreadStack(tid=5, thread_name="MainThread",
                          frames=(RawFrame("handle", "/app/views.py", 12),), count=4)]
    resource: dict[str, LabelValue] = {"service.name": "web", "process.pid": 5}
    return [build_profile(stacks, rate=100, start_ns=START, duration_ns=WINDOW,
                          resource=resource, wall=wall, frames=FrameCache())
            for wall in (False, True)]


def every_type(timestamps: bool = False) -> dict[str, Profile]:
    """``producer/type`` -> profile."""
    out = {f"ebpf/{p.name}": p for p in ebpf(timestamps)}
    out.update({f"go/{p.name}": p for p in go()})
    out.update({f"jfr/{p.name}": p for p in jfr()})
    out.update({f"python/{p.name}": p for p in python()})
    return out
