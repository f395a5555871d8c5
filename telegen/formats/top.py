"""The seed's "top functions" table, computed like ``go tool pprof -top``.

Granularity is pprof's default, *functions*: every ``Line`` of a frame (the
inlined callees and the function they were inlined into) is its own entry;
frames without lines collapse into one entry per object file, shown as
``[libc.so.6]`` (``<unknown>`` without a mapping), as pprof shows them with
``-symbolize=none``. Flat goes to the innermost line of the leaf frame; cum
counts a function once per sample even when it recurses; entries whose cum is
below 0.5% of the total are dropped (pprof's node fraction). Rows are sorted by
|flat| descending, then name, then |cum| descending (pprof's ``FlatNameOrder``),
and percentages are of the sum of |value| over all samples.

Output (the seed's "Sample Output")::

    Total CPU time: 60s

    Flat      Flat%   Sum%    Cum       Cum%    Name
    15.20s    25.3%   25.3%   15.20s    25.3%   encoding/json.(*decodeState).scanWhile
"""

from __future__ import annotations

from dataclasses import dataclass

from telegen.formats.pprof import pseudo_mapping_file
from telegen.pdata import Frame, Profile
from telegen.untrusted.text import printable

_HEADERS = {
    "cpu": "Total CPU time",
    "off_cpu": "Total Off-CPU time",
    "alloc_space": "Total allocations",
    "inuse_space": "Total in-use memory",
    "delay": "Total lock delay",
}
_TIME_UNITS = [("hrs", 3600e9), ("s", 1e9), ("ms", 1e6), ("us", 1e3), ("ns", 1.0)]
_BYTE_UNITS = [("PB", 2.0**50), ("TB", 2.0**40), ("GB", 2.0**30), ("MB", 2.0**20),
               ("kB", 2.0**10), ("B", 1.0)]
_TO_NS = {"nanosecond": 1.0, "ns": 1.0, "microsecond": 1e3, "us": 1e3, "millisecond": 1e6,
          "ms": 1e6, "second": 1e9, "sec": 1e9, "s": 1e9}
_TO_BYTES = {"byte": 1.0, "b": 1.0, "kilobyte": 2.0**10, "kb": 2.0**10, "megabyte": 2.0**20,
             "mb": 2.0**20}


@dataclass(frozen=True, slots=True)
class TopRow:
    name: str
    flat: int
    cum: int
    flat_pct: float   # of the total, 0..100
    sum_pct: float    # running sum of flat_pct down the table
    cum_pct: float


def frame_function_names(frame: Frame) -> list[str]:
    """Entry names of one frame, innermost first, as pprof's functions granularity."""
    if frame.lines:
        return [ln.function or _object_name(frame) for ln in frame.lines]
    return [_object_name(frame)]


def _object_name(frame: Frame) -> str:
    file = frame.mapping.file if frame.mapping is not None else pseudo_mapping_file(frame.kind)
    return f"[{file.rsplit('/', 1)[-1]}]" if file else "<unknown>"


def _sample_index(profile: Profile, sample_type: str | None) -> int:
    return profile.value_index(sample_type)


def total(profile: Profile, sample_type: str | None = None) -> int:
    """Sum of |value| of the chosen sample type (pprof's report total)."""
    idx = _sample_index(profile, sample_type)
    return sum(abs(s.values[idx]) for s in profile)


def top_rows(profile: Profile, sample_type: str | None = None, n: int = 10, *,
             node_fraction: float = 0.005) -> list[TopRow]:
    """The first ``n`` rows of ``go tool pprof -top`` (all rows when ``n <= 0``).

    As pprof, entries whose |cum| is below ``node_fraction`` of the total are
    left out (pprof's ``-nodefraction``, default 0.005).
    """
    idx = _sample_index(profile, sample_type)
    flat: dict[str, int] = {}
    cum: dict[str, int] = {}
    names: dict[Frame, list[str]] = {}
    grand = 0
    for sample in profile:
        value = sample.values[idx]
        grand += abs(value)
        if not sample.stack:
            continue
        seen: set[str] = set()
        for frame in sample.stack:
            entry = names.get(frame)
            if entry is None:
                entry = names[frame] = frame_function_names(frame)
            for name in entry:
                if name not in seen:
                    seen.add(name)
                    cum[name] = cum.get(name, 0) + value
        leaf = names[sample.stack[0]][0]
        flat[leaf] = flat.get(leaf, 0) + value
    cutoff = abs(int(sum(flat.values()) * node_fraction))
    kept = [k for k, c in cum.items() if abs(c) >= cutoff]
    order = sorted(kept, key=lambda k: (-abs(flat.get(k, 0)), k, -abs(cum[k])))
    if n > 0:
        order = order[:n]
    rows: list[TopRow] = []
    running = 0
    for name in order:
        f = flat.get(name, 0)
        running += f
        rows.append(TopRow(name, f, cum[name], _pct(f, grand), _pct(running, grand),
                           _pct(cum[name], grand)))
    return rows


def _pct(value: int, whole: int) -> float:
    return abs(value) / whole * 100.0 if whole else 0.0


def format_value(value: int, unit: str) -> str:
    """``15.20s``, ``320ms``, ``350MB``, ``1.2GB``; counts stay plain integers."""
    if value == 0:
        return "0"
    key = unit.lower()
    if len(key) > 2:
        key = key.removesuffix("s")
    if key in _TO_NS:
        v = value * _TO_NS[key]
        name, factor = next((u for u in _TIME_UNITS if abs(v) >= u[1]), _TIME_UNITS[-1])
        return f"{v / factor:.2f}".removesuffix(".00") + name
    if key in _TO_BYTES:
        v = value * _TO_BYTES[key]
        name, factor = next((u for u in _BYTE_UNITS if abs(v) >= u[1]), _BYTE_UNITS[-1])
        text = f"{v / factor:.2f}"
        return text.rstrip("0").rstrip(".") + name
    return str(value)


def header(profile: Profile, sample_type: str | None = None) -> str:
    """``Total CPU time: 60s`` for the chosen sample type."""
    vt = profile.sample_types[_sample_index(profile, sample_type)]
    label = _HEADERS.get(vt.type, f"Total {vt.type}")
    return f"{label}: {format_value(total(profile, sample_type), vt.unit)}"


def render_top(profile: Profile, sample_type: str | None = None, n: int = 10, *,
               node_fraction: float = 0.005) -> str:
    """The seed-style table: total line, blank line, column header, rows.
    Names and the header pass through :func:`printable` (they come from
    profiled binaries and pushed profiles), and so does the message of the
    KeyError for an unknown ``sample_type`` (it lists the file's types)."""
    try:
        unit = profile.sample_types[_sample_index(profile, sample_type)].unit
    except KeyError as exc:
        raise KeyError(printable(str(exc.args[0]))) from None
    rows = top_rows(profile, sample_type, n, node_fraction=node_fraction)
    flats = [format_value(r.flat, unit) for r in rows]
    cums = [format_value(r.cum, unit) for r in rows]
    fw = max([len(x) for x in flats] + [4])
    flat_col = max(10, fw + 2)
    cum_col = max(10, max([len(x) for x in cums] + [3]) + 2)
    out = [printable(header(profile, sample_type)), "",
           "Flat".ljust(flat_col) + "Flat%   Sum%    " + "Cum".ljust(cum_col) + "Cum%    Name"]
    for row, f, c in zip(rows, flats, cums, strict=True):
        out.append(f.rjust(fw).ljust(flat_col) + _pct_cell(row.flat_pct)
                   + _pct_cell(row.sum_pct) + c.ljust(cum_col) + _pct_cell(row.cum_pct)
                   + printable(row.name))
    return "\n".join(out) + "\n"


def _pct_cell(p: float) -> str:
    return f"{p:.1f}%".rjust(5).ljust(8)
