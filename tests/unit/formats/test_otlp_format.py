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
)
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, SpanLink
from telegen.testing.otlp_checks import check_dictionary
from telegen.testing.pprof_checks import profile_state, synthetic_profiles


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
    assert types == [str(vt) for p in profiles for vt in p.sample_types]
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
    assert attrs["service.name"].string_value == "unknown_service:app"
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
    ns = req.resource_profiles[0].scope_profiles[0].profiles[1].samples[0]
    assert list(ns.values) == [1_000_001, 1_000_000, 1_000_000]
    assert list(ns.timestamps_unix_nano) == [1010, 1020, 1030]
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
