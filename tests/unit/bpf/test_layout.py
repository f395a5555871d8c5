"""The Key/Leaf layouts the compiler child sends are rebuilt byte for byte."""

from __future__ import annotations

import ctypes

import pytest

from telegen.bpf import layout
from telegen.receivers.ebpf.keys import CEvent, CSampleKey


class Packed(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("a", ctypes.c_uint8), ("b", ctypes.c_uint64), ("bits", ctypes.c_uint32, 3)]


class Either(ctypes.Union):
    _fields_ = [("i", ctypes.c_int32), ("raw", ctypes.c_char * 6)]


@pytest.mark.parametrize("ctype", [ctypes.c_ulonglong, ctypes.c_uint8, CSampleKey, CEvent,
                                   Packed, Either, ctypes.c_uint64 * 127])
def test_round_trip_keeps_size_offsets_and_values(ctype: type) -> None:
    rebuilt = layout.build(layout.describe(ctype))
    assert ctypes.sizeof(rebuilt) == ctypes.sizeof(ctype)
    if hasattr(ctype, "_fields_"):
        assert [(f[0], getattr(rebuilt, f[0]).offset) for f in rebuilt._fields_] == \
            [(f[0], getattr(ctype, f[0]).offset) for f in ctype._fields_]
    original = ctype()
    ctypes.memset(ctypes.addressof(original), 0x5A, ctypes.sizeof(ctype))
    copy = rebuilt.from_buffer_copy(bytes(original))
    assert bytes(copy) == bytes(original)


def test_sample_key_fields_read_back() -> None:
    k = CSampleKey(pid=7, tid=8, user_stack=-14, comm=b"python3", py_stack=3, go_labels=9)
    rebuilt = layout.build(layout.describe(CSampleKey)).from_buffer_copy(bytes(k))
    assert (rebuilt.pid, rebuilt.user_stack, rebuilt.comm, rebuilt.go_labels) == \
        (7, -14, b"python3", 9)


@pytest.mark.parametrize("desc", [{"scalar": "Z"}, {"array": {"scalar": "I"}, "length": -1},
                                  {"struct": "s", "fields": [[1, {"scalar": "I"}]]}, "I"])
def test_malformed_layout_is_refused(desc: object) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        layout.build(desc)  # type: ignore[arg-type]


def test_deep_nesting_is_refused() -> None:
    desc: dict[str, object] = {"scalar": "I"}
    for _ in range(40):
        desc = {"array": desc, "length": 1}
    with pytest.raises(ValueError):
        layout.build(desc)
