"""Is a process CPython, and where is its runtime?

A process runs CPython when it maps ``libpython3.X`` or an executable named
``python3.X`` (statically linked, Debian's ``/usr/bin/python3.11``) that
exports ``_PyRuntime``. The version comes from the binary's ``Py_Version``
(3.11+, read from the process) or else its name; the offsets from
:mod:`~telegen.interpreters.cpython.offsets`. Every file and byte here is the
process's: the binary is opened by descriptor inside its root
(:func:`~telegen.procinfo.open_mapped`), its headers checked before use, its
symbol tables read bounded; anything odd is refused and counted.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from telegen.interpreters.cpython.offsets import (
    SUPPORTED,
    CPyProc,
    Offsets,
    from_debug_offsets,
    table_offsets,
)
from telegen.procinfo.elfheaders import ElfHeaders, read_headers
from telegen.procinfo.maps import MapEntry, open_mapped, read_maps
from telegen.procinfo.memory import read_memory
from telegen.procinfo.procfs import PROC
from telegen.untrusted import Refusals, Refused

_NAME = re.compile(r"^(?:lib)?python3\.(\d+)[a-z]*(?:\.so(?:\.[\d.]+)?)?$")
MAX_SYMTAB = 32 << 20          # bytes of symbol + string table read per binary
WANTED = (b"_PyRuntime", b"_PyEval_EvalFrameDefault", b"_PyEval_EvalFrameDefault.cold",
          b"PyCode_Type", b"Py_Version")
SOURCE = "cpython"


@dataclass(frozen=True, slots=True)
class CPythonProcess:
    pid: int
    version: int                           # major * 100 + minor
    runtime: int                           # absolute address of _PyRuntime
    code_type: int                         # absolute address of PyCode_Type
    eval_ranges: tuple[tuple[int, int], ...]   # absolute [start, end) of _PyEval_EvalFrameDefault
    offsets: Offsets
    binary: str                            # the file that holds the interpreter

    def proc_struct(self) -> CPyProc:
        """The ``struct py_proc`` value for the BPF ``py_procs`` map."""
        return CPyProc(runtime=self.runtime, off=self.offsets.bpf())


def detect(pid: int, *, proc: str = PROC, refusals: Refusals | None = None) \
        -> CPythonProcess | None:
    """The CPython runtime of ``pid``, or None (not CPython, an unsupported
    version, gone, or refused — counted in ``refused_inputs{source=cpython}``)."""
    entries = read_maps(pid, proc)
    if not entries:
        return None
    seen: set[str] = set()
    for entry in entries:
        path = entry.path.removesuffix(" (deleted)")
        if entry.offset != 0 or not entry.is_file or path in seen:
            continue
        name_match = _NAME.match(os.path.basename(path))
        if name_match is None:
            continue
        seen.add(path)
        try:
            found = _inspect(pid, entry, path, name_match, proc, refusals)
        except Refused as exc:
            if refusals is not None:
                refusals.note_exc(SOURCE, exc)
            continue
        if found is not None:
            return found
    return None


def _inspect(pid: int, entry: MapEntry, path: str, name: re.Match[str], proc: str,
             refusals: Refusals | None) -> CPythonProcess | None:
    mapped = open_mapped(pid, path, entry.start, proc=proc, refusals=refusals)
    if mapped is None:
        return None
    with mapped:
        headers = read_headers(mapped.fd)
        symbols = _symbols(mapped.fd, headers)
        loads = [p for p in headers.segments if p.type == 1]
    if b"_PyRuntime" not in symbols or b"_PyEval_EvalFrameDefault" not in symbols:
        return None
    first = min((p for p in loads), key=lambda p: p.offset, default=None)
    if first is None or first.offset != 0:
        raise Refused("bad_elf", f"{path}: no PT_LOAD at offset 0")
    bias = entry.start - (first.vaddr & ~0xFFF)
    version = _version(pid, bias, symbols, int(name.group(1)))
    if version not in SUPPORTED:
        raise Refused("unsupported_version", f"{path}: CPython {version // 100}.{version % 100}")
    runtime = bias + symbols[b"_PyRuntime"][0]
    offsets = _offsets(pid, version, runtime)
    ranges = tuple((bias + a, bias + a + max(size, 1))
                   for key in (b"_PyEval_EvalFrameDefault", b"_PyEval_EvalFrameDefault.cold")
                   if key in symbols for a, size in (symbols[key],))
    code_type = bias + symbols[b"PyCode_Type"][0] if b"PyCode_Type" in symbols else 0
    return CPythonProcess(pid, version, runtime, code_type, ranges, offsets, path)


def _offsets(pid: int, version: int, runtime: int) -> Offsets:
    if version < 313:
        return table_offsets(version)
    raw = read_memory(pid, runtime, 1024)
    if raw is None:
        raise Refused("unreadable", f"_PyRuntime of {pid}")
    return from_debug_offsets(version, raw)


def _version(pid: int, bias: int, symbols: dict[bytes, tuple[int, int]], minor: int) -> int:
    """From ``Py_Version`` (PY_VERSION_HEX, 3.11+) when the binary has it."""
    if b"Py_Version" in symbols:
        raw = read_memory(pid, bias + symbols[b"Py_Version"][0], 4)
        if raw is None:
            raise Refused("unreadable", f"Py_Version of {pid}")
        hexversion = struct.unpack("<I", raw)[0]
        return (hexversion >> 24) * 100 + ((hexversion >> 16) & 0xFF)
    return 300 + minor


def _symbols(fd: int, headers: ElfHeaders) -> dict[bytes, tuple[int, int]]:
    """(value, size) of the :data:`WANTED` symbols, from ``.symtab`` then ``.dynsym``."""
    found: dict[bytes, tuple[int, int]] = {}
    for table in (".symtab", ".dynsym"):
        sec = headers.section(table)
        if sec is None or sec.compressed or not 0 <= sec.link < len(headers.sections):
            continue
        strtab = headers.sections[sec.link]
        if sec.size + strtab.size > MAX_SYMTAB:
            raise Refused("too_large", f"{table}: {sec.size + strtab.size} bytes")
        data = os.pread(fd, sec.size, sec.offset)
        names = os.pread(fd, strtab.size, strtab.offset)
        for name_off, _info, _other, _shndx, value, size in struct.iter_unpack(
                "<IBBHQQ", data[:len(data) - len(data) % 24]):
            if not value or name_off >= len(names):
                continue
            end = names.find(b"\0", name_off, name_off + 64)
            name = names[name_off:end] if end >= 0 else b""
            if name in WANTED and name not in found:
                found[name] = (value, size)
        if b"_PyRuntime" in found:
            return found
    return found
