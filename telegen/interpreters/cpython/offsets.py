"""The offsets the BPF CPython walker reads (``bpf/cpython_offsets.h``) and
those the code-object reader uses, for one CPython version.

Before 3.13 they come from :data:`~telegen.interpreters.cpython.tables.TABLES`.
From 3.13 on, CPython publishes its own in ``_PyRuntime.debug_offsets``
(``_Py_DebugOffsets``, cookie ``xdebugpy``): :func:`from_debug_offsets` reads
them from the process, so a patch release that moves a field is still read
right. The layout of that struct is itself per minor version
(:data:`DEBUG_LAYOUTS`, from the 3.13.0 DWARF).
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from telegen.interpreters.cpython.tables import TABLES
from telegen.untrusted import Refused

PY_NONE = 0xFFFF
SUPPORTED = tuple(sorted(TABLES))        # 308 ... 313
BPF_FIELDS = ("runtime_interpreters_head", "interp_threads_head", "tstate_next",
              "tstate_thread_id", "tstate_native_thread_id", "tstate_frame",
              "cframe_current_frame", "frame_back", "frame_code", "frame_instr",
              "frame_owner", "code_adaptive")

# 3.12+: _PyInterpreterFrame.owner of the shim frame each C-level call of
# _PyEval_EvalFrameDefault pushes (FRAME_OWNED_BY_CSTACK); 3.11 marks the
# first real frame of such a call with is_entry instead.
FRAME_OWNED_BY_CSTACK = 3


class CPyOffsets(ctypes.Structure):
    """Mirror of ``struct py_offsets`` in bpf/cpython_offsets.h."""

    _fields_ = ([("version", ctypes.c_uint16)]
                + [(name, ctypes.c_uint16) for name in BPF_FIELDS]
                + [("task_fsbase", ctypes.c_uint16)]
                + [("pad", ctypes.c_uint16 * 2)])


class CPyProc(ctypes.Structure):
    """Mirror of ``struct py_proc`` in bpf/cpython_offsets.h."""

    _fields_ = [("runtime", ctypes.c_uint64), ("off", CPyOffsets)]


@dataclass(frozen=True, slots=True)
class Offsets:
    version: int                      # major * 100 + minor
    fields: dict[str, int | None]

    def __getitem__(self, name: str) -> int | None:
        return self.fields.get(name)

    def bpf(self) -> CPyOffsets:
        out = CPyOffsets(version=self.version)
        for name in BPF_FIELDS:
            value = self.fields.get(name)
            setattr(out, name, PY_NONE if value is None else value)
        return out


def table_offsets(version: int) -> Offsets:
    if version not in TABLES:
        raise Refused("unsupported_version", f"CPython {version // 100}.{version % 100}")
    return Offsets(version, dict(TABLES[version][1]))


# _Py_DebugOffsets: field -> byte offset of its u64 inside the struct, per version.
DEBUG_COOKIE = b"xdebugpy"
DEBUG_LAYOUTS: dict[int, tuple[int, dict[str, int]]] = {
    313: (544, {
        "runtime_interpreters_head": 40,
        "interp_threads_head": 72,
        "tstate_next": 168, "tstate_frame": 184, "tstate_thread_id": 192,
        "tstate_native_thread_id": 200,
        "frame_back": 232, "frame_code": 240, "frame_instr": 248, "frame_owner": 264,
        "code_filename": 280, "code_name": 288, "code_qualname": 296,
        "code_linetable": 304, "code_firstlineno": 312, "code_adaptive": 344,
        "bytes_sval": 528,
    }),
}


def from_debug_offsets(version: int, raw: bytes) -> Offsets:
    """The offsets a 3.13+ process publishes at the start of ``_PyRuntime``.
    Refused when the cookie or version does not match, or a value is absurd
    (the process is lying, or is not what it looked like)."""
    size, layout = DEBUG_LAYOUTS.get(version, (0, {}))
    if not layout:
        raise Refused("unsupported_version", f"no _Py_DebugOffsets layout for {version}")
    if len(raw) < size or raw[:8] != DEBUG_COOKIE:
        raise Refused("bad_debug_offsets", "no _Py_DebugOffsets cookie")
    hexversion = struct.unpack_from("<Q", raw, 8)[0]
    if (hexversion >> 24, (hexversion >> 16) & 0xFF) != (version // 100, version % 100):
        raise Refused("bad_debug_offsets", f"version {hexversion:#x} is not {version}")
    fields = dict(TABLES.get(version, ("", {}))[1])
    for name, at in layout.items():
        value = struct.unpack_from("<Q", raw, at)[0]
        if value >= PY_NONE:
            raise Refused("bad_debug_offsets", f"{name} = {value}")
        fields[name] = value
    fields["cframe_current_frame"] = None     # 3.13+: tstate->current_frame directly
    return Offsets(version, fields)
