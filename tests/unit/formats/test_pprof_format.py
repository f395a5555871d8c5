from __future__ import annotations

import gzip

import pytest

from telegen.formats import pprof
from telegen.formats.pprof import PprofError, decode, encode
from telegen.pdata import CPU, Frame, FrameKind, Line, Mapping, Profile
from telegen.testing.pprof_checks import profile_state, synthetic_profiles


def _proto(data: bytes):  # type: ignore[no-untyped-def]
    msg = pprof.pb.Profile()
    msg.ParseFromString(gzip.decompress(data))
    return msg


@pytest.mark.parametrize("profile", synthetic_profiles(), ids=lambda p: p.name)
def test_decode_encode_round_trip_is_exact(profile: Profile) -> None:
    again = decode(encode(profile))
    assert profile_state(again) == profile_state(profile)
    assert again.name == profile.name
    assert len(again) == len(profile)


def test_encode_is_gzip_and_raw_decodes_too() -> None:
    cpu = synthetic_profiles()[0]
    data = encode(cpu)
    assert data[:2] == b"\x1f\x8b"
    raw = encode(cpu, compress=False)
    assert gzip.decompress(data) == raw
    assert profile_state(decode(raw)) == profile_state(cpu)


def test_interning_tables_follow_pprof_rules() -> None:
    msg = _proto(encode(synthetic_profiles()[0]))
    assert msg.string_table[0] == ""
    assert len(set(msg.string_table)) == len(msg.string_table)
    for table in (msg.mapping, msg.location, msg.function):
        assert [e.id for e in table] == list(range(1, len(table) + 1))
    strings = list(msg.string_table)
    assert [strings[v.type] + "/" + strings[v.unit] for v in msg.sample_type] == [
        "samples/count", "cpu/nanoseconds"]
    assert strings[msg.default_sample_type] == "cpu"
    assert (strings[msg.period_type.type], msg.period) == ("cpu", 10_101_010)
    assert msg.time_nanos == 1_700_000_000_123_456_789
    assert msg.duration_nanos == 10_000_000_000


def test_labels_link_and_resource_encoding() -> None:
    msg = _proto(encode(synthetic_profiles()[0]))
    strings = list(msg.string_table)
    comments = [strings[i] for i in msg.comment]
    assert 'resource:host.name="web-1"' in comments
    assert "resource:process.pid=4242" in comments
    assert "collected by telegen tests" in comments
    found = {}
    for s in msg.sample:
        for lb in s.label:
            key = strings[lb.key]
            found[key] = strings[lb.str] if lb.str else lb.num
    assert found["thread"] in ("worker-1", "worker-2")
    assert found["tid"] in (11, 12)          # int label -> Label.num
    assert found["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert found["span_id"] == "b7ad6b7169203331"


def test_kernel_frames_use_kallsyms_mapping_and_inlined_lines_stay_in_order() -> None:
    msg = _proto(encode(synthetic_profiles()[0]))
    strings = list(msg.string_table)
    files = {m.id: strings[m.filename] for m in msg.mapping}
    funcs = {f.id: strings[f.name] for f in msg.function}
    by_name = {}
    for loc in msg.location:
        names = [funcs[ln.function_id] for ln in loc.line]
        by_name[tuple(names)] = (files.get(loc.mapping_id, ""), loc)
    assert by_name[("ksys_read",)][0] == "[kernel.kallsyms]"
    assert by_name[("entry_SYSCALL_64",)][0] == "[kernel.kallsyms]"
    assert ("parse_digit", "parse_number") in by_name     # innermost first
    assert by_name[("view",)][0] == "[python]"
    app = next(m for m in msg.mapping if strings[m.filename] == "/usr/bin/app")
    assert strings[app.build_id] == "8f2a41c0ffee"
    assert app.has_functions and app.has_inline_frames


def test_frame_kinds_survive_round_trip() -> None:
    cpu = decode(encode(synthetic_profiles()[0]))
    kinds = {f.name: f.kind for s in cpu for f in s.stack}
    assert kinds["ksys_read"] is FrameKind.KERNEL
    assert kinds["entry_SYSCALL_64"] is FrameKind.KERNEL
    assert kinds["view"] is FrameKind.PYTHON
    assert kinds["main.serve"] is FrameKind.GO
    assert kinds["main"] is FrameKind.NATIVE
    frames = {f.name: f for s in cpu for f in s.stack}
    assert frames["ksys_read"].mapping is None
    assert frames["entry_SYSCALL_64"].mapping is not None


def test_system_name_equal_to_name_reads_as_empty() -> None:
    line = Line("main.f", "/x.go", 3)
    p = Profile(name="cpu", sample_types=CPU)
    p.add((Frame(FrameKind.NATIVE, 0x10, Mapping(0, 0x100, 0, "/bin/x"), (line,)),), [1, 10])
    msg = _proto(encode(p))
    assert msg.string_table[msg.function[0].system_name] == "main.f"   # as Go writes it
    (frame,) = decode(encode(p)).samples[0].stack
    assert frame.lines == (line,)


@pytest.mark.parametrize("data", [
    b"",
    b"hello, this is not a profile",
    b"\x1f\x8b\x08\x00garbage-after-gzip-magic",
    gzip.compress(b"\xff\xff\xff\xff\xff\xff\xff"),
    bytes(range(256)) * 3,
])
def test_garbage_raises_pprof_error(data: bytes) -> None:
    with pytest.raises(PprofError) as info:
        decode(data)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


def test_dangling_reference_is_an_error() -> None:
    msg = _proto(encode(synthetic_profiles()[0]))
    msg.sample[0].location_id.append(999)
    with pytest.raises(PprofError, match="unknown location 999"):
        decode(msg.SerializeToString())
    msg = _proto(encode(synthetic_profiles()[0]))
    msg.comment.append(len(msg.string_table) + 5)
    with pytest.raises(PprofError, match="comment"):
        decode(msg.SerializeToString())
    msg = _proto(encode(synthetic_profiles()[0]))
    msg.sample[0].value.append(1)
    with pytest.raises(PprofError, match="values"):
        decode(msg.SerializeToString())
