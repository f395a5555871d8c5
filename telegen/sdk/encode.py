"""One upload interval of SDK samples -> an OTLP profiles export request.

The same message :func:`telegen.formats.otlp.encode_request` makes for the
equivalent pdata profile (type ``wall``: ``samples/count`` +
``wall/nanoseconds``, one OTLP profile per sample type, Python frames with
``profile.frame.type = cpython``), built straight from the sampler's keys with
the shared dictionary encoder: stacks, labels and span links are interned
once per distinct value instead of going through pdata frames and samples per
sample. Runs in the uploader thread; needs Python 3.11+ (the agent's encoder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from telegen.sdk.codes import Lines

if TYPE_CHECKING:
    from telegen.sdk.sampler import Buffer

# One profile, as the OpenTelemetry eBPF profiler sends CPU: samples/count with
# the period type; receivers (ours, Pyroscope's converter) derive the time
# column as count x period. A second wall/nanoseconds profile would be stored
# by Pyroscope as an extra series.
SAMPLE_TYPE = ("samples", "count")
PERIOD_TYPE = ("wall", "nanoseconds")


def encode(buf: Buffer, *, period: int, end_ns: int,
           resource: dict[str, str | int]) -> bytes:
    from telegen import __version__
    from telegen.formats.otlp import DEFAULT_TYPE, FRAME_TYPE, NAME, SCOPE, svc
    from telegen.formats.otlp import _any_value as any_value
    from telegen.formats.otlp import _Encoder as Encoder
    from telegen.pdata import Line, make_labels
    from telegen.semconv import THREAD_ID, THREAD_NAME

    enc = Encoder()
    d = enc.d
    names, lines = buf.names, Lines()
    python = [enc.attr(FRAME_TYPE, "cpython")]
    locations: dict[tuple[int, int], int] = {}          # (code id, line) -> index
    stacks: dict[tuple[tuple[int, int], ...], int] = {}  # sampler stack -> index
    labels: dict[tuple[int, str, str], tuple[int, ...]] = {}
    links: dict[tuple[int, int], int] = {}
    rows: dict[tuple[int, tuple[int, ...], int], int] = {}
    for (tid, tname, task, stack, link), count in buf.counts.items():
        st = stacks.get(stack)
        if st is None:
            locs = []
            for cid, lasti in stack:
                fn, file, code = names[cid]
                line = lines.line(code, lasti)
                loc = locations.get((cid, line))
                if loc is None:
                    loc = locations[(cid, line)] = len(d.location_table)
                    d.location_table.add(attribute_indices=python).lines.add(
                        function_index=enc.function(Line(fn, file)), line=line)
                locs.append(loc)
            key = tuple(locs)
            st = enc.stacks.get(key)
            if st is None:
                st = enc.stacks[key] = len(d.stack_table)
                d.stack_table.add(location_indices=key)
            stacks[stack] = st
        where = (tid, tname, task)
        lab = labels.get(where)
        if lab is None:
            lab = labels[where] = tuple(
                enc.attr(k, v)
                for k, v in make_labels(**{THREAD_ID: tid or None, THREAD_NAME: tname,
                                           "task_name": task}))
        ln = 0
        if link:
            ln = links.get(link, -1)
            if ln < 0:
                ln = links[link] = _link(enc, link)
        row = (st, lab, ln)
        rows[row] = rows.get(row, 0) + count

    req = svc.ExportProfilesServiceRequest()
    rp = req.resource_profiles.add()
    for k, v in resource.items():
        rp.resource.attributes.add(key=k, value=any_value(v))
    scope = rp.scope_profiles.add()
    scope.scope.name, scope.scope.version = SCOPE, __version__
    attrs = [enc.attr(NAME, "wall"), enc.attr(DEFAULT_TYPE, "wall")]
    out = scope.profiles.add(time_unix_nano=buf.start_ns,
                             duration_nano=max(0, end_ns - buf.start_ns),
                             period=period, attribute_indices=attrs)
    out.sample_type.type_strindex = enc.s(SAMPLE_TYPE[0])
    out.sample_type.unit_strindex = enc.s(SAMPLE_TYPE[1])
    out.period_type.type_strindex = enc.s(PERIOD_TYPE[0])
    out.period_type.unit_strindex = enc.s(PERIOD_TYPE[1])
    add = out.samples.add
    for (st, lab, ln), count in rows.items():
        add(stack_index=st, attribute_indices=lab, link_index=ln, values=[count])
    req.dictionary.CopyFrom(d)
    return bytes(req.SerializeToString())


def _link(enc: Any, link: tuple[int, int]) -> int:
    try:
        key = (link[0].to_bytes(16, "big"), link[1].to_bytes(8, "big"))
    except (OverflowError, AttributeError, TypeError):
        return 0
    idx: int | None = enc.links.get(key)
    if idx is None:
        idx = enc.links[key] = len(enc.d.link_table)
        enc.d.link_table.add(trace_id=key[0], span_id=key[1])
    return idx
