from __future__ import annotations

import io

import pytest

from telegen.formats.jfr import JfrError, count_events, events, read_chunks, summarize
from telegen.formats.jfr.reader import Cursor, PoolString, VarCursor

from .jfrbuild import (
    STRING,
    THREAD,
    UNKNOWN,
    Enc,
    chunk,
    demo_classes,
    event,
    sample_event,
    varint,
)


def _thread(enc: Enc, name: str, tid: int) -> bytes:
    return enc.string(name) + enc.i64(tid)


def _demo(enc: Enc, texts: list[bytes] | None = None) -> bytes:
    texts = texts or [enc.string("hello")]
    evs = [sample_event(enc, 7, t, [1, -2, 300000]) for t in texts]
    evs.insert(1, event(enc, UNKNOWN, enc.i64(9) + enc.string("x" * 300)))
    pools = [[(THREAD, [(7, _thread(enc, "main", 1))])],
             [(STRING, [(42, enc.string("pooled text"))]),
              (THREAD, [(8, _thread(enc, "other", 2))])]]
    return chunk(enc, demo_classes(), evs, pools)


@pytest.mark.parametrize("compressed", [True, False])
def test_events_decode_with_both_integer_encodings(compressed: bool) -> None:
    enc = Enc(compressed)
    (c,) = list(read_chunks(io.BytesIO(_demo(enc))))
    assert c.header.compressed is compressed
    (e,) = list(events(c, {"test.Sample"}))
    assert e.values["values"] == [1, -2, 300000]
    assert e.get("thread") == {"javaName": "main", "javaThreadId": 1}
    assert e.values["flag"] is True and e.values["ratio"] == 0.5
    # the unknown/unrequested event is skipped by its size; both are counted
    assert count_events(c) == {"test.Sample": 1, "test.Other": 1, "jdk.Metadata": 1,
                               "jdk.CheckPoint": 2}


def test_every_string_encoding() -> None:
    enc = Enc(True)
    texts = [enc.string(None), enc.string("", "chars"), enc.pool_string(42),
             enc.string("grüße €", "utf8"), enc.string("façade 𝄞", "chars"),
             enc.string("café", "latin1"), enc.string("plain ascii", "chars")]
    (c,) = list(read_chunks(io.BytesIO(_demo(enc, texts))))
    got = [e.values["text"] for e in events(c, {"test.Sample"})]
    assert got == [None, "", PoolString(42), "grüße €", "façade 𝄞", "café", "plain ascii"]
    assert [c.text(t) for t in got] == [None, "", "pooled text", "grüße €", "façade 𝄞",
                                        "café", "plain ascii"]


def test_constant_pools_are_followed_through_the_delta_chain() -> None:
    (c,) = list(read_chunks(io.BytesIO(_demo(Enc(True)))))
    # thread 7 is in the first checkpoint, 8 and the string in the second
    assert c.pool_entry(THREAD, 7)["javaName"] == "main"
    assert c.pool_entry(THREAD, 8)["javaName"] == "other"
    assert c.pool_entry(STRING, 42) == "pooled text"


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31 - 1, 2**35, 2**62, -1, -2**63])
def test_varint_round_trip(value: int) -> None:
    raw = varint(value)
    assert len(raw) <= 9
    assert VarCursor(raw).i64() == value
    assert VarCursor(raw).varint() == value


def test_fixed_width_integers() -> None:
    cur = Cursor(bytes.fromhex("ffffffff 7fff 0000000000000100"), compressed=False)
    assert (cur.i32(), cur.i16(), cur.i64()) == (-1, 32767, 256)


def test_several_chunks_stream_and_a_bad_one_is_skipped() -> None:
    good = _demo(Enc(True))
    broken = bytearray(_demo(Enc(False)))
    broken[-20:] = b"\x7f" * 20              # trash the last checkpoint
    data = good + bytes(broken) + good
    errors: list[JfrError] = []
    chunks = list(read_chunks(io.BytesIO(data), on_error=errors.append))
    assert len(chunks) == 2 and len(errors) == 1
    assert [c.header.offset for c in chunks] == [0, len(good) + len(broken)]
    with pytest.raises(JfrError):
        list(read_chunks(io.BytesIO(data)))


def test_truncated_file_and_garbage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = _demo(Enc(True))
    errors: list[JfrError] = []
    assert list(read_chunks(io.BytesIO(good[:-10]), on_error=errors.append)) == []
    assert "truncated" in str(errors[0])
    with pytest.raises(JfrError, match="magic"):
        list(read_chunks(io.BytesIO(b"PK\3\4" + b"\0" * 100)))
    path = tmp_path / "two.jfr"
    path.write_bytes(good + good)
    assert summarize(str(path))["test.Sample"] == 2
