"""How each telegen profile type travels as OTLP profiles (v1development),
chosen as the OpenTelemetry eBPF profiler sends them and as Pyroscope's OTLP
converter (grafana/pyroscope ``pkg/ingester/otlp/convert.go``, which names a
series after the period type) files them, within what ``profcheck``
(open-telemetry/sig-profiling) accepts.

Per telegen profile type: OTLP profile(s) as sample type / period type
(samples shape) -> Pyroscope series:

* cpu: samples/count / cpu/nanoseconds, period P (counts)
  -> process_cpu:cpu:nanoseconds:cpu:nanoseconds
* wall: samples/count / wall/nanoseconds, period P (counts)
  -> wall:samples:count:wall:nanoseconds
* off_cpu: off_cpu/nanoseconds, no period type, period 0 (events)
  -> off_cpu:off_cpu:nanoseconds::; and samples/count / off_cpu/nanoseconds
  (counts) -> off_cpu:samples:count:off_cpu:nanoseconds
* alloc, inuse: {alloc,inuse}_objects/count (counts) and {alloc,inuse}_space/bytes
  (values) / memory/bytes -> memory:alloc_space:bytes:memory:bytes, ...
* mutex: contentions/count (counts), delay/nanoseconds (values) / mutex/count
  -> mutex:contentions:count:mutex:count, mutex:delay:nanoseconds:mutex:count
* block (Go), park (JFR): the same / block/count -> block:...:block:count
* goroutine: goroutine/count / goroutine/count (counts)
  -> goroutine:goroutine:count:goroutine:count
* anything else (JFR gc, ...): one profile per column / its period type, or
  <name>/count with period 1 when it has none -> <period type>:<column>:...

Sample shapes, one per OTLP profile as profcheck wants: counts: the events
that have a timestamp inside ``[time, time + duration)`` as timestamps only,
one per event (the eBPF profiler's CPU shape), the rest of the count as one
value in a second profile of the same type; events (off-CPU time): N values
for N timestamps adding up to the sample's total, samples without timestamps
as one value in a second profile; values: one value, no timestamps. Receivers
add the two profiles of a type up, so totals stay exact. The CPU (wall) time
column is not sent: it is count x period and the decoder rebuilds it (a
profile whose time column is not count x period sends it as its own profile).
The pdata period type and period travel in ``telegen.profile.period`` when
the wire's differ, so decoding is exact except for timestamps outside the
window. Span links are sent only with a 16-byte trace id and an 8-byte span
id (else as ``trace_id`` / ``span_id`` attributes); a sample's attribute keys
are unique; an all-empty function is index 0; a mapping range that is not
``start < limit`` is sent as 0-0; a profile without sample types is not sent
(no empty ScopeProfiles).

"""

from __future__ import annotations

from dataclasses import dataclass

from telegen.pdata import Profile, Sample, SpanLink, ValueType

# How a pdata column travels (see the module docstring's table).
COUNTS, VALUES, EVENTS = "counts", "values", "events"
# Period types named so receivers that take the series name from the period
# type (Pyroscope's OTLP converter) file these profiles under their usual name.
_WIRE_PERIOD = {"alloc": ValueType("memory", "bytes"), "inuse": ValueType("memory", "bytes"),
                "mutex": ValueType("mutex", "count"), "block": ValueType("block", "count"),
                "park": ValueType("block", "count")}
_DERIVED = {"cpu", "wall"}    # period types whose column is count x period


@dataclass(frozen=True)
class WireColumn:
    index: int                       # pdata value column
    sample_type: ValueType
    period_type: ValueType | None
    period: int
    mode: str


def wire_columns(p: Profile) -> list[WireColumn]:
    """The OTLP profiles one pdata profile becomes, one sample type each."""
    types = list(p.sample_types)
    pt = p.period_type
    off = [i for i, vt in enumerate(types) if vt == ValueType("off_cpu", "nanoseconds")]
    if p.name == "off_cpu" and off:
        count_period = pt or ValueType("off_cpu", "nanoseconds")
        return [WireColumn(i, vt, None, 0, EVENTS) if i == off[0] else
                WireColumn(i, vt, count_period, p.period if p.period > 0 else 1,
                           COUNTS if vt.unit == "count" else VALUES)
                for i, vt in enumerate(types)]
    count = [i for i, vt in enumerate(types) if vt == ValueType("samples", "count")]
    if count and pt is not None and pt.type in _DERIVED and pt.unit == "nanoseconds" and \
            p.period > 0 and set(types) <= {types[count[0]], pt}:
        c, t = count[0], types.index(pt) if pt in types else -1
        if t < 0 or all(s.values[t] == s.values[c] * p.period for s in p):
            return [WireColumn(c, types[c], pt, p.period, COUNTS)]
    period_type = _WIRE_PERIOD.get(p.name, pt)
    if period_type is None:
        period_type = ValueType(p.name or "profile", "count")
    period = p.period if p.period > 0 else 1
    return [WireColumn(i, vt, period_type, period, COUNTS if vt.unit == "count" else VALUES)
            for i, vt in enumerate(types)]


Row = tuple[int, list[int], int, list[int], list[int]]


def split_column(p: Profile, col: WireColumn, rows: list[tuple[int, list[int], int, Sample]]
           ) -> tuple[list[Row], list[Row]]:
    """The column's samples as (timestamped, plain) parts, each of one shape:
    events in ``[start, end)`` with a timestamp go to the first (counts: one
    timestamp per event, no values; events: N values for N timestamps), the
    rest (values columns, samples without timestamps, events whose timestamp
    was lost or falls outside the window) to the second, one value each.
    Totals stay exact; a receiver adds the two parts up."""
    start, end = p.start_ns, p.end_ns
    stamped: list[Row] = []
    plain: list[Row] = []
    for stack, labels, link, s in rows:
        value = s.values[col.index]
        stamps = [t for t in s.timestamps if start <= t < end] if col.mode != VALUES else []
        if col.mode == COUNTS:
            stamps = stamps[:max(value, 0)]
            if stamps:
                stamped.append((stack, labels, link, [], stamps))
            if value - len(stamps) or not stamps:
                plain.append((stack, labels, link, [value - len(stamps)], []))
        elif col.mode == EVENTS and stamps:
            stamped.append((stack, labels, link, spread(value, len(stamps)), stamps))
        else:
            plain.append((stack, labels, link, [value], []))
    return stamped, plain


def valid_link(link: SpanLink) -> tuple[bytes, bytes] | None:
    """(trace id, span id) bytes when both are valid W3C ids: 16 and 8 bytes,
    not all zero; receivers (the Collector's pdata) refuse a whole request
    for a link of another length."""
    try:
        trace, span = bytes.fromhex(link.trace_id), bytes.fromhex(link.span_id)
    except ValueError:
        return None
    if len(trace) != 16 or len(span) != 8 or not any(trace) or not any(span):
        return None
    return trace, span


def spread(total: int, n: int) -> list[int]:
    """``n`` integers adding up to ``total``, as even as possible."""
    base, extra = divmod(total, n)
    return [base + 1 if i < extra else base for i in range(n)]


def derived_period(p: Profile, columns: int) -> str:
    """"cpu" / "wall" when the profile is the one-column CPU (or wall) shape
    (samples/count with a cpu or wall nanoseconds period): its time column is
    count x period and is rebuilt."""
    pt = p.period_type
    if columns == 1 and p.sample_types[0] == ValueType("samples", "count") and pt is not None \
            and pt.type in _DERIVED and pt.unit == "nanoseconds" and p.period > 0:
        return pt.type
    return ""


def restore_period(p: Profile, stored: object) -> None:
    """The pdata period type and period, when the wire carried another."""
    if stored is None:
        return
    parts = str(stored).split("/")
    if len(parts) == 3 and parts[2].isdigit():
        p.period_type, p.period = ValueType(parts[0], parts[1]), int(parts[2])
    else:
        p.period_type, p.period = None, 0
