"""kernel_btf: struct member offsets from BTF (a synthetic blob, and the running kernel's)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from telegen.receivers.ebpf.kernel_btf import BtfError, KernelBtf, task_fsbase_offset


def _blob(types: list[bytes], names: list[str]) -> bytes:
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    type_sec = b"".join(types)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(type_sec), len(type_sec),
                      len(strings))
    return hdr + type_sec + strings


def _name(names: list[str], name: str) -> int:
    return 1 + sum(len(n) + 1 for n in names[:names.index(name)])


def _struct(name_off: int, size: int, members: list[tuple[int, int, int]], kflag: int = 0) -> bytes:
    info = (4 << 24) | len(members) | (kflag << 31)
    return struct.pack("<III", name_off, info, size) + b"".join(
        struct.pack("<III", *m) for m in members)


def test_nested_and_anonymous_members() -> None:
    names = ["long", "inner", "fsbase", "outer", "thread", "other"]
    n = lambda s: _name(names, s)          # noqa: E731
    types = [
        struct.pack("<IIII", n("long"), 1 << 24, 8, 64),                 # 1: int
        _struct(n("inner"), 24, [(n("other"), 1, 0), (n("fsbase"), 1, 128)]),   # 2
        struct.pack("<III", 0, 8 << 24, 2),                             # 3: typedef -> 2
        _struct(0, 24, [(n("thread"), 3, 64)]),                         # 4: anonymous
        _struct(n("outer"), 64, [(n("other"), 1, 0), (0, 4, 8 * 8)], kflag=1),  # 5
    ]
    btf = KernelBtf(_blob(types, names))
    assert btf.member_offset("outer", "thread.fsbase") == 8 + 8 + 16
    with pytest.raises(BtfError):
        btf.member_offset("outer", "thread.nothing")
    with pytest.raises(BtfError):
        btf.member_offset("missing", "x")


def test_malformed_blobs_are_refused() -> None:
    with pytest.raises(BtfError):
        KernelBtf(b"\x00" * 10)
    with pytest.raises(BtfError):
        KernelBtf(struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 0))
    with pytest.raises(BtfError):      # sections beyond the blob
        KernelBtf(struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 100, 100, 10))
    with pytest.raises(BtfError):      # an unknown kind
        KernelBtf(_blob([struct.pack("<III", 0, 31 << 24, 0)], []))


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").exists(), reason="no kernel BTF")
def test_running_kernel_fsbase_offset_is_plausible() -> None:
    off = task_fsbase_offset()
    assert 0 < off < 16384 and off % 8 == 0
