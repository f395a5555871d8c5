"""pdata <-> OTLP profiles (v1development) translation."""

from __future__ import annotations

import pytest

from telegen.formats.otlp import (
    FRAME_TYPE,
    OtlpError,
    decode_request,
    encode_request,
    parse_request,
    svc,
    wire_columns,
)
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, SpanLink
from telegen.semconv import split_by_process
from telegen.testing.otlp_checks import check_dictionary
from telegen.testing.pprof_checks import profile_state, synthetic_profiles
from telegen.testing.profcheck import check
from telegen.testing.profile_catalog import every_type


def _round_trip(profiles: list[Profile], **kw: object) -> list[Profile]:
    data = encode_request(profiles, **kw).SerializeToString()  # type: ignore[arg-type]
    return decode_request(parse_request(data))


def test_round_trip_is_exact_for_every_synthetic_profile() -> None:
    profiles = synthetic_profiles()
    back = _round_trip(profiles)
    assert [p.name for p in back] == [p.name for p in profiles]
    for a, b in zip(profiles, back, strict=True):
        assert profile_state(b) == profile_state(a)


def test_dictionary_invariants_and_one_sample_type_per_profile() -> None:
    profiles = synthetic_profiles()
    req = encode_request(profiles)
    check_dictionary(req)
    strings = list(req.dictionary.string_table)
    otlp = [p for rp in req.resource_profiles for sp in rp.scope_profiles for p in sp.profiles]
    types = [f"{strings[p.sample_type.type_strindex]}/{strings[p.sample_type.unit_strindex]}"
             for p in otlp]
    assert types == [f"{c.sample_type}" for p in profiles for c in wire_columns(p)]
    # the dictionary is shared: a frame used by several profiles is one location
    assert len(req.dictionary.location_table) - 1 == len(
        {f for p in profiles for s in p for f in s.stack})


def test_resource_attributes_service_name_and_frame_types() -> None:
    cpu = synthetic_profiles()[0]
    req = encode_request([cpu], service="checkout")
    attrs = {kv.key: kv.value for kv in req.resource_profiles[0].resource.attributes}
    assert attrs["host.name"].string_value == "web-1"
    assert attrs["process.pid"].int_value == 4242
    assert attrs["service.name"].string_value == "checkout"
    derived = encode_request([cpu], service="")
    attrs = {kv.key: kv.value for kv in derived.resource_profiles[0].resource.attributes}
    assert attrs["service.name"].string_value == "app"   # the executable's name
    d = req.dictionary
    kinds = {d.attribute_table[i].value.string_value for loc in d.location_table[1:]
             for i in loc.attribute_indices
             if d.string_table[d.attribute_table[i].key_strindex] == FRAME_TYPE}
    assert kinds == {"native", "kernel", "cpython", "go"}
    scope = req.resource_profiles[0].scope_profiles[0].scope
    assert scope.name == "telegen"


def test_links_are_bytes_and_timestamps_keep_totals() -> None:
    link = SpanLink("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    frame = Frame(FrameKind.NATIVE, 0x10, None, (Line("f"),))
    p = Profile(name="cpu", sample_types=CPU, start_ns=1000, duration_ns=100)
    p.add((frame,), [3, 3_000_001], timestamps=[1010, 1020, 1030], link=link)
    req = encode_request([p])
    check_dictionary(req)
    assert req.dictionary.link_table[1].trace_id == bytes.fromhex(link.trace_id)
    assert len(req.dictionary.link_table[1].span_id) == 8
    # no period: one OTLP profile per column; the count column as timestamps
    # only (one per count), the time column as one value (receivers that take a
    # period refuse N values)
    count, ns = (prof.samples[0] for prof in req.resource_profiles[0].scope_profiles[0].profiles)
    assert list(count.values) == [] and list(count.timestamps_unix_nano) == [1010, 1020, 1030]
    assert list(ns.values) == [3_000_001] and list(ns.timestamps_unix_nano) == []
    (back,) = _round_trip([p])
    (s,) = back.samples
    assert s.values == [3, 3_000_001] and s.timestamps == [1010, 1020, 1030] and s.link == link


def test_foreign_timestamp_only_samples_count_one_each() -> None:
    """A producer may send timestamps without values: each counts 1."""
    req = svc.ExportProfilesServiceRequest()
    d = req.dictionary
    d.string_table.extend(["", "samples", "count", "main"])
    for t in (d.mapping_table, d.link_table, d.attribute_table):
        t.add()
    d.function_table.add()
    d.function_table.add(name_strindex=3)
    d.location_table.add()
    d.location_table.add().lines.add(function_index=1)
    d.stack_table.add()
    d.stack_table.add(location_indices=[1])
    prof = req.resource_profiles.add().scope_profiles.add().profiles.add()
    prof.sample_type.type_strindex, prof.sample_type.unit_strindex = 1, 2
    prof.samples.add(stack_index=1, timestamps_unix_nano=[5, 6, 7, 8])
    (p,) = decode_request(req)
    assert p.totals() == [4]
    assert p.samples[0].stack[0].name == "main"


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.dictionary.stack_table[1].location_indices.append(99), "stack location"),
    (lambda r: r.dictionary.location_table[1].lines.add(function_index=999), "line function"),
    (lambda r: setattr(r.resource_profiles[0].scope_profiles[0].profiles[0].samples[0],
                       "stack_index", 10_000), "sample stack"),
    (lambda r: setattr(r.resource_profiles[0].scope_profiles[0].profiles[0].sample_type,
                       "type_strindex", 10_000), "string"),
])
def test_out_of_range_indices_are_errors(breakage: object, message: str) -> None:
    req = encode_request(synthetic_profiles()[:1])
    breakage(req)  # type: ignore[operator]
    with pytest.raises(OtlpError, match=message):
        decode_request(parse_request(req.SerializeToString()))


def test_garbage_bytes_and_bad_string_table() -> None:
    with pytest.raises(OtlpError):
        parse_request(b"\xff\xff\xff\xff not protobuf")
    req = encode_request(synthetic_profiles()[:1])
    req.dictionary.string_table[0] = "oops"
    with pytest.raises(OtlpError, match="string_table"):
        decode_request(req)


def _otlp_profiles(req: object) -> list:  # type: ignore[type-arg]
    return [p for rp in req.resource_profiles  # type: ignore[attr-defined]
            for sp in rp.scope_profiles for p in sp.profiles]


@pytest.mark.parametrize("trace, span", [
    ("0af7651916cd43dd8448eb211c8031", "b7ad6b7169203331"),        # 15 bytes
    ("0af7651916cd43dd8448eb211c80319c00", "b7ad6b7169203331"),    # 17 bytes
    ("0af7651916cd43dd8448eb211c80319c", "b7ad6b71692033"),        # 7 bytes
    ("00000000000000000000000000000000", "b7ad6b7169203331"),      # all zero
    ("not hex", "b7ad6b7169203331"),
])
def test_link_ids_of_the_wrong_length_never_reach_the_link_table(trace: str, span: str) -> None:
    frame = Frame(FrameKind.NATIVE, 0x10, None, (Line("f"),))
    p = Profile(name="cpu", sample_types=CPU, start_ns=1000, duration_ns=100)
    p.add((frame,), [1, 10], link=SpanLink(trace, span))
    req = encode_request([p])
    assert len(req.dictionary.link_table) == 1 and check(req) == []
    (s,) = _otlp_profiles(req)[0].samples
    assert s.link_index == 0
    (back,) = _round_trip([p])
    assert back.samples[0].link is None
    assert dict(back.samples[0].labels) == {"trace_id": trace, "span_id": span}


def test_encoder_enforces_profcheck_invariants() -> None:
    """Timestamps outside [time, time+duration), mixed shapes, repeated keys,
    an all-empty function, an empty profile: none reach the wire."""
    empty_fn = Frame(FrameKind.NATIVE, 0x20, None, (Line(""),))
    frame = Frame(FrameKind.NATIVE, 0x10, None, (Line("f"),))
    p = Profile(name="cpu", sample_types=CPU, start_ns=1000, duration_ns=100)
    p.add((frame,), [2, 20], (("k", "a"), ("k", 1)), timestamps=[1010, 1200])   # one outside
    p.add((empty_fn,), [1, 10], timestamps=[1050])
    p.add((frame, empty_fn), [1, 10])                                         # no timestamps
    nothing = Profile(name="empty", sample_types=(), start_ns=1000, duration_ns=100)
    req = encode_request([p, nothing])
    assert check(req) == []
    assert len(req.resource_profiles) == 1
    assert all(fn.name_strindex for fn in list(req.dictionary.function_table)[1:])
    stamps = sorted(t for prof in _otlp_profiles(req) for s in prof.samples
                    for t in s.timestamps_unix_nano)
    assert stamps == [1010, 1050]                 # 1200 is outside the window
    (back,) = _round_trip([p])
    assert sorted(s.values[0] for s in back) == [1, 1, 2]    # counts stay exact
    assert sorted(t for s in back for t in s.timestamps) == [1010, 1050]
    assert [dict(s.labels) for s in back if s.labels] == [{"k": "a"}]


@pytest.mark.parametrize("timestamps", [False, True])
def test_every_type_has_the_receivers_shape(timestamps: bool) -> None:
    """cpu as the OpenTelemetry eBPF profiler sends it (samples/count with a cpu
    period, timestamps only when on), off-CPU as off_cpu/nanoseconds without a
    period (what Pyroscope's converter recognises), one sample type each."""
    catalog = every_type(timestamps)
    req = encode_request(list(catalog.values()))
    assert check(req) == []
    strings = req.dictionary.string_table
    shapes = [(strings[p.sample_type.type_strindex], strings[p.period_type.type_strindex],
               p.period, bool(p.samples[0].timestamps_unix_nano), len(p.samples[0].values))
              for p in _otlp_profiles(req)]
    ebpf_cpu, off_count, off_time = shapes[0], shapes[1], shapes[2]
    assert ebpf_cpu == ("samples", "cpu", 10_101_010, timestamps, 0 if timestamps else 1)
    assert off_count[:3] == ("samples", "off_cpu", 1)
    assert off_time == ("off_cpu", "", 0, timestamps, 4 if timestamps else 1)
    back = decode_request(parse_request(req.SerializeToString()))
    # the process attributes of ebpf's samples arrive on the resource
    for a, b in zip(split_by_process(catalog.values()), back, strict=True):
        assert profile_state(b) == profile_state(a), a.name
        assert not any(k.startswith("process.") for s in b for k, _ in s.labels)


def test_lost_timestamps_split_a_column_into_two_shapes() -> None:
    """eBPF may record fewer timestamps than events (ring buffer full): the
    stamped events go as timestamps only, the rest as one value in a second
    profile of the same type; profcheck and Pyroscope accept both, totals and
    timestamps survive."""
    from telegen.pdata import OFF_CPU, ValueType
    from telegen.testing.pyroscope_otlp import convert

    frame = Frame(FrameKind.NATIVE, 0x10, None, (Line("f"),))
    cpu = Profile(name="cpu", sample_types=CPU, period_type=ValueType("cpu", "nanoseconds"),
                  period=10, start_ns=1000, duration_ns=100)
    cpu.add((frame,), [5, 50], (("tid", 1),), timestamps=[1001, 1002])
    cpu.add((), [3, 30], (("tid", 2),))
    off = Profile(name="off_cpu", sample_types=OFF_CPU, start_ns=1000, duration_ns=100)
    off.add((frame,), [2, 700], (("tid", 1),), timestamps=[1010, 1020])
    off.add((), [1, 300], (("tid", 2),))
    req = encode_request([cpu, off])
    assert check(req) == []
    series = convert(req)
    totals: dict[str, int] = {}
    for s in series:
        totals[s.profile_type] = totals.get(s.profile_type, 0) + s.total
    assert totals == {"process_cpu:cpu:nanoseconds:cpu:nanoseconds": 80,
                      "off_cpu:samples:count:off_cpu:nanoseconds": 3,
                      "off_cpu:off_cpu:nanoseconds::": 1000}
    back = decode_request(parse_request(req.SerializeToString()))
    assert [profile_state(b) for b in back] == [profile_state(cpu), profile_state(off)]
    assert sorted(t for b in back for s in b for t in s.timestamps) == [1001, 1002, 1010, 1020]


def test_an_empty_window_is_not_an_empty_scope() -> None:
    """A window without samples (the last one at shutdown) used to become a
    ScopeProfiles without profiles: profcheck refused the whole request."""
    empty = Profile(name="cpu", sample_types=CPU, start_ns=1000, duration_ns=100,
                    resource={"process.pid": 1})
    cpu = synthetic_profiles()[0]
    req = encode_request([empty, cpu])
    assert check(req) == []
    assert len(req.resource_profiles) == len(split_by_process([cpu]))
