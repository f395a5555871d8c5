"""The parser never raises anything but JfrError, whatever it is fed."""
from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telegen.formats.jfr import JfrError, count_events, events, read_chunks

from .jfrbuild import STRING, THREAD, Enc, chunk, demo_classes, sample_event

_ENC = Enc(True)
_VALID = chunk(_ENC, demo_classes(), [sample_event(_ENC, 7, _ENC.string("hi"), [1, 2])],
               [[(THREAD, [(7, _ENC.string("main") + _ENC.i64(1))]),
                 (STRING, [(1, _ENC.string("s"))])]])


def _consume(data: bytes) -> None:
    try:
        for c in read_chunks(io.BytesIO(data)):
            count_events(c)
            for e in events(c):
                for fd in e.type.fields:
                    e.get(fd.name)
    except JfrError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _consume(data)
    _consume(b"FLR\0\0\2\0\1" + data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)),
                min_size=1, max_size=8),
       st.integers(0, len(_VALID)))
def test_mutated_valid_chunk(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_VALID)
    for pos, value in flips:
        data[pos] = value
    _consume(bytes(data))
    _consume(bytes(data[:cut]))
