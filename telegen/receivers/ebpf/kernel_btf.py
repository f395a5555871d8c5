"""Byte offsets of kernel struct members, from the running kernel's BTF.

BCC compiles against whatever kernel headers are installed (here Debian's
6.1 headers on a 6.18 kernel), so a struct offset taken from them can be
wrong. The CPython walker (bpf/cpython.h) needs one: where a task's user
``fsbase`` (the thread pointer, == ``pthread_self()`` on x86-64 glibc and
musl) sits in ``struct task_struct``. It is read here from
``/sys/kernel/btf/vmlinux`` and handed to BPF through a map.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
BTF_MAGIC = 0xEB9F
MAX_BTF_BYTES = 64 << 20

# kind -> bytes that follow struct btf_type (fixed part, per-vlen part)
_EXTRA = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
          8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12)}
_STRUCT, _UNION, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG = 4, 5, 8, 9, 10, 11, 18


class BtfError(ValueError):
    """The BTF blob is malformed or lacks the member asked for."""


class KernelBtf:
    """Struct layouts of one BTF blob (only what member offsets need)."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        types_at, strings_at = hdr_len + type_off, hdr_len + str_off
        if types_at + type_len > len(data) or strings_at + str_len > len(data):
            raise BtfError("BTF sections out of bounds")
        self._strings = data[strings_at:strings_at + str_len]
        self._data = data
        # type id -> (kind, name_off, size_or_type, vlen, kflag, offset of members)
        self._types: list[tuple[int, int, int, int, int, int]] = [(0, 0, 0, 0, 0, 0)]
        self._structs: dict[bytes, int] = {}
        at, end = types_at, types_at + type_len
        while at + 12 <= end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, at)
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            if kind not in _EXTRA:
                raise BtfError(f"unknown BTF kind {kind}")
            fixed, per = _EXTRA[kind]
            self._types.append((kind, name_off, size_or_type, vlen, kflag, at + 12))
            if kind == _STRUCT and name_off:
                self._structs.setdefault(self._name(name_off), len(self._types) - 1)
            at += 12 + fixed + per * vlen
        if at != end:
            raise BtfError("BTF type section does not end on a type")

    @classmethod
    def vmlinux(cls, path: Path = VMLINUX_BTF) -> KernelBtf:
        with path.open("rb") as f:
            data = f.read(MAX_BTF_BYTES + 1)
        if len(data) > MAX_BTF_BYTES:
            raise BtfError(f"{path} larger than {MAX_BTF_BYTES} bytes")
        return cls(data)

    def _name(self, off: int) -> bytes:
        end = self._strings.find(b"\0", off)
        return self._strings[off:end if end >= 0 else len(self._strings)]

    def _resolve(self, type_id: int) -> int:
        for _ in range(32):          # typedef/const/volatile chains are short
            if not 0 < type_id < len(self._types):
                raise BtfError(f"bad type id {type_id}")
            kind, _n, target, *_ = self._types[type_id]
            if kind not in (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG):
                return type_id
            type_id = target
        raise BtfError("type chain too long")

    def member_offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``path`` (dotted members, e.g. ``thread.fsbase``) in
        ``struct struct_name``; members of anonymous structs/unions are found too."""
        type_id = self._structs.get(struct_name.encode())
        if type_id is None:
            raise BtfError(f"struct {struct_name} not in BTF")
        total = 0
        for member in path.split("."):
            found = self._find(type_id, member.encode())
            if found is None:
                raise BtfError(f"{struct_name}: no member {path}")
            bits, type_id = found
            if bits % 8:
                raise BtfError(f"{struct_name}.{path} is a bitfield")
            total += bits // 8
        return total

    def _find(self, type_id: int, name: bytes, depth: int = 0) -> tuple[int, int] | None:
        kind, _n, _size, vlen, kflag, at = self._types[self._resolve(type_id)]
        if kind not in (_STRUCT, _UNION) or depth > 8:
            return None
        for i in range(vlen):
            name_off, mtype, offset = struct.unpack_from("<III", self._data, at + 12 * i)
            bits = offset & 0xFFFFFF if kflag else offset
            if name_off and self._name(name_off) == name:
                return bits, mtype
            if not name_off:          # anonymous struct/union: look inside
                inner = self._find(mtype, name, depth + 1)
                if inner is not None:
                    return bits + inner[0], inner[1]
        return None


def task_fsbase_offset(btf: KernelBtf | None = None) -> int:
    """Offset of the user thread pointer in ``struct task_struct`` (x86-64)."""
    if btf is None:
        return _running_kernel_fsbase_offset()
    return btf.member_offset("task_struct", "thread.fsbase")


@functools.cache
def _running_kernel_fsbase_offset() -> int:
    # parsed once per agent: the Go and CPython walkers both ask (~5 MB of BTF
    # in Python, 0.2 s of CPU each time)
    return KernelBtf.vmlinux().member_offset("task_struct", "thread.fsbase")
