"""Checks for pprof round trips: a comparable snapshot of a Profile, and a
parser for ``go tool pprof -top`` text so tests can compare against it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from telegen.pdata import Profile

_UNITS = {
    "ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "mins": 60e9, "hrs": 3600e9,
    "B": 1.0, "kB": 2.0**10, "MB": 2.0**20, "GB": 2.0**30, "TB": 2.0**40, "PB": 2.0**50,
    "": 1.0,
}
_VALUE_RE = re.compile(r"^(-?[0-9.]+(?:e[-+]?\d+)?)([A-Za-zµ]*)$")
_ROW_RE = re.compile(r"^\s*(\S+)\s+(\S+)%\s+(\S+)%\s+(\S+)\s+(\S+)%\s+(.*?)\s*$")


def profile_state(p: Profile) -> dict[str, Any]:
    """Everything a Profile holds, in a form ``==`` can compare (sample order ignored)."""
    samples = sorted(
        ((s.stack, tuple(s.values), s.labels, s.link) for s in p),
        key=repr)
    return {
        "name": p.name, "sample_types": p.sample_types, "period_type": p.period_type,
        "period": p.period, "start_ns": p.start_ns, "duration_ns": p.duration_ns,
        "resource": dict(p.resource), "default_sample_type": p.default_sample_type,
        "comments": list(p.comments), "samples": samples,
    }


@dataclass(frozen=True)
class PprofTopRow:
    name: str
    flat: float       # in the sample type's base unit (ns, bytes, count)
    cum: float
    tolerance: float  # half of the last printed digit, in base units


def parse_value(text: str) -> tuple[float, float]:
    """``"1.10s"`` → (1.1e9, 5e6): value in base units and its rounding tolerance."""
    m = _VALUE_RE.match(text)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"not a pprof value: {text!r}")
    number, unit = m.group(1), m.group(2)
    factor = _UNITS[unit]
    decimals = len(number.partition(".")[2])
    return float(number) * factor, 0.5 * 10.0**-decimals * factor


def parse_pprof_top(text: str) -> list[PprofTopRow]:
    """Rows of ``go tool pprof -top`` output (after its ``flat  flat%`` header)."""
    rows: list[PprofTopRow] = []
    started = False
    for line in text.splitlines():
        if not started:
            started = line.split()[:2] == ["flat", "flat%"]
            continue
        m = _ROW_RE.match(line)
        if not m:
            continue
        flat, tol_f = parse_value(m.group(1))
        cum, tol_c = parse_value(m.group(4))
        name = re.sub(r" \((?:partial-)?inline\)$", "", m.group(6))
        rows.append(PprofTopRow(name, flat, cum, max(tol_f, tol_c)))
    if not started:
        raise ValueError("no `flat flat%` header in pprof output:\n" + text)
    return rows


def synthetic_profiles() -> list[Profile]:
    """Profiles exercising every pprof mapping rule: inlined lines, string / int
    labels, span links, kernel frames (with and without a mapping), unsymbolized
    frames, python and go frames, recursion, resource attributes, comments."""
    from telegen.pdata import (
        ALLOC,
        CPU,
        OFF_CPU,
        Frame,
        FrameKind,
        Line,
        Mapping,
        SpanLink,
        ValueType,
        make_labels,
    )

    app = Mapping(0x400000, 0x600000, 0, "/usr/bin/app", "8f2a41c0ffee", True, True, True, True)
    libc = Mapping(0x7F0000000000, 0x7F0000200000, 0x28000, "/usr/lib/libc.so.6", "aa55")
    kallsyms = Mapping(0xFFFFFFFF81000000, 0xFFFFFFFF83000000, 0, "[kernel.kallsyms]")
    inlined = Frame(FrameKind.NATIVE, 0x401234, app, (
        Line("parse_digit", "/src/parse.c", 17, start_line=15),
        Line("parse_number", "/src/parse.c", 40, "_Z12parse_numberv", 33)))
    handler = Frame(FrameKind.NATIVE, 0x402000, app, (Line("handle", "/src/main.c", 90),))
    main = Frame(FrameKind.NATIVE, 0x403000, app, (Line("main", "/src/main.c", 120),))
    recurse = Frame(FrameKind.NATIVE, 0x404000, app, (Line("walk", "/src/tree.c", 5),))
    memcpy = Frame(FrameKind.NATIVE, 0x7F0000012345, libc, ())
    nomap = Frame(FrameKind.NATIVE, 0xDEAD, None, ())
    sys_read = Frame(FrameKind.KERNEL, 0xFFFFFFFF81234567, None, (Line("ksys_read"),))
    entry = Frame(FrameKind.KERNEL, 0xFFFFFFFF81000100, kallsyms,
                  (Line("entry_SYSCALL_64"),))
    kunsym = Frame(FrameKind.KERNEL, 0xFFFFFFFF81999999, None, ())
    py = Frame(FrameKind.PYTHON, 0, None, (Line("view", "/app/views.py", 12),))
    gofn = Frame(FrameKind.GO, 0x405000, app, (Line("main.serve", "/src/serve.go", 3),))

    start = 1_700_000_000_123_456_789
    cpu = Profile(name="cpu", sample_types=CPU, period_type=ValueType("cpu", "nanoseconds"),
                  period=10_101_010, start_ns=start, duration_ns=10_000_000_000,
                  resource={"host.name": "web-1", "process.pid": 4242,
                            "process.executable.name": "app"},
                  default_sample_type="cpu", comments=["collected by telegen tests"])
    ms = 1_000_000
    cpu.add((inlined, handler, main), [7, 70 * ms], make_labels(thread="worker-1", tid=11))
    cpu.add((handler, main), [3, 30 * ms], make_labels(thread="worker-1", tid=11),
            link=SpanLink("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"))
    cpu.add((memcpy, handler, main), [5, 50 * ms], make_labels(thread="worker-2", tid=12))
    cpu.add((sys_read, entry, memcpy, handler, main), [4, 40 * ms])
    cpu.add((kunsym, entry), [1, 10 * ms])
    cpu.add((recurse, recurse, recurse, main), [6, 60 * ms])
    cpu.add((nomap,), [2, 20 * ms])
    cpu.add((py, gofn, main), [2, 20 * ms], make_labels(request="GET /"))

    off = Profile(name="off_cpu", sample_types=OFF_CPU, start_ns=start,
                  duration_ns=10_000_000_000, resource={"host.name": "web-1"})
    off.add((sys_read, entry, handler, main), [12, 900 * ms])
    off.add((handler, main), [1, 25 * ms])

    alloc = Profile(name="alloc", sample_types=ALLOC,
                    period_type=ValueType("space", "bytes"), period=512 * 1024,
                    default_sample_type="alloc_space")
    alloc.add((inlined, handler, main), [120, 350 * 2**20], make_labels(bytes=4096))
    alloc.add((memcpy, main), [40, 220 * 2**20])

    odd = Profile(name="wallclock", sample_types=[ValueType("wall", "nanoseconds")],
                  comments=["#hidden note", "resource-ish: not a resource"])
    odd.add((py,), [5])
    odd.add((), [1])
    return [cpu, off, alloc, odd]
