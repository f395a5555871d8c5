"""What BCC produced, as data: the compiled object the loader loads with plain
``bpf()`` syscalls (:mod:`telegen.bpf.loader`) and the start-up cache keeps
(:mod:`telegen.bpf.objcache`).

A compiled object is JSON::

    {"format": 1, "license": "GPL", "kern_version": n,
     "maps": {name: {"kname", "type", "key_size", "value_size", "max_entries",
                     "flags", "key": layout | null, "leaf": layout | null}},
     "programs": {name: {"type": prog type, "insns": base64 of struct bpf_insn[],
                         "maps": [[insn index, map name], ...],
                         "self_tgid": [insn index, ...],
                         "attach": null | {"kind": "tracepoint", "target": "cat:event"}
                                   | {"kind": "raw_tracepoint", "target": "event"}
                                   | {"kind": "cpu_clock"}}}}

``maps`` are the ``BPF_LD_IMM64`` instructions BCC wrote a map's fd into
(``BPF_PSEUDO_MAP_FD``), zeroed here: the loader writes the fd of the map of
that name in this process. ``self_tgid`` are the instructions whose
immediate is :data:`SELF_TGID_SENTINEL` (the programs are compiled with
``-DSELF_TGID=<sentinel>``, so one object serves every agent pid): the loader
writes the agent's pid there. :func:`check` validates an object from
anywhere (the cache) before anything is loaded.
"""

from __future__ import annotations

import base64
import re
import struct
from typing import Any

FORMAT = 1
# Never a pid (pid_max is at most 2^22), and a positive s32 immediate
SELF_TGID_SENTINEL = 0x7E1E9E17
INSN = struct.Struct("<BBhi")
LD_IMM64 = 0x18
PSEUDO_MAP_FD = 1
MAX_INSNS = 1 << 20
MAX_PROGRAMS = 64
MAX_MAPS = 256
PROG_TYPES = frozenset({2, 5, 7, 17})      # kprobe, tracepoint, perf_event, raw_tracepoint
MAP_TYPES = frozenset({1, 2, 4, 5, 6, 7, 9, 10, 27})
ATTACH_KINDS = frozenset({"tracepoint", "raw_tracepoint", "cpu_clock"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TARGET = re.compile(r"[A-Za-z0-9_]{1,64}(:[A-Za-z0-9_]{1,64})?")


# what a hand-over manifest says of each map (telegen.bpf.objects checks it)
MANIFEST_MAP_FIELDS = ("type", "max_entries", "key_size", "value_size", "key", "leaf")


class ObjectError(ValueError):
    """A compiled object that is malformed or cannot be relocated."""


def extract_relocations(insns: bytes, fd_names: dict[int, str]) -> tuple[bytes, list[list[Any]],
                                                                         list[int]]:
    """BCC's instructions → (instructions with map fds zeroed, map relocations,
    self-tgid sites). Raises ObjectError on a relocation it does not know."""
    if len(insns) % 8:
        raise ObjectError("instructions are not a multiple of 8 bytes")
    out = bytearray(insns)
    relocs: list[list[Any]] = []
    sites: list[int] = []
    i, n = 0, len(insns) // 8
    while i < n:
        code, regs, off, imm = INSN.unpack_from(out, i * 8)
        if code == LD_IMM64:
            if i + 1 >= n:
                raise ObjectError(f"truncated BPF_LD_IMM64 at {i}")
            src = regs >> 4
            hi = INSN.unpack_from(out, (i + 1) * 8)[3]
            if src == PSEUDO_MAP_FD:
                name = fd_names.get(imm)
                if name is None:
                    raise ObjectError(f"instruction {i} refers to fd {imm}, not a map")
                relocs.append([i, name])
                INSN.pack_into(out, i * 8, code, regs, off, 0)
            elif src != 0:
                raise ObjectError(f"instruction {i}: unsupported BPF_LD_IMM64 source {src}")
            elif imm == SELF_TGID_SENTINEL and hi == 0:
                sites.append(i)
            i += 2
            continue
        if imm == SELF_TGID_SENTINEL:
            sites.append(i)
        i += 1
    return bytes(out), relocs, sites


def map_definition(m: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two maps of the same name the same kernel object's shape."""
    return tuple(m[k] for k in ("type", "key_size", "value_size", "max_entries", "flags",
                                "key", "leaf"))


def merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One object of two compiled from the same header with the same flags
    (the compiler child's phases): the maps of both (one of each name,
    ObjectError when two of a name differ) and the programs of both
    (ObjectError when both have one of a name)."""
    if (first["license"], first["kern_version"]) != (second["license"],
                                                     second["kern_version"]):
        raise ObjectError("objects of different licenses or kernel versions")
    maps = dict(first["maps"])
    for name, m in second["maps"].items():
        if name in maps and map_definition(maps[name]) != map_definition(m):
            raise ObjectError(f"map {name}: two definitions")
        maps.setdefault(name, m)
    both = set(first["programs"]) & set(second["programs"])
    if both:
        raise ObjectError(f"programs in both objects: {sorted(both)}")
    return check({**first, "maps": maps,
                  "programs": {**first["programs"], **second["programs"]}})


def manifest_map(definition: dict[str, Any], fd_index: int) -> dict[str, Any]:
    """A map of a compiled object as the hand-over manifest names it."""
    return {"fd": fd_index, **{k: definition[k] for k in MANIFEST_MAP_FIELDS}}


def relocate(program: dict[str, Any], map_fds: dict[str, int], self_tgid: int) -> bytes:
    """A program's instructions with this process's map fds and the agent's pid."""
    out = bytearray(base64.b64decode(program["insns"], validate=True))
    for index, name in program["maps"]:
        code, regs, off, _ = INSN.unpack_from(out, index * 8)
        INSN.pack_into(out, index * 8, code, regs, off, map_fds[name])
    for index in program["self_tgid"]:
        code, regs, off, imm = INSN.unpack_from(out, index * 8)
        if imm != SELF_TGID_SENTINEL:
            raise ObjectError(f"instruction {index} does not hold the SELF_TGID sentinel")
        INSN.pack_into(out, index * 8, code, regs, off, self_tgid)
    return bytes(out)


def check(obj: Any) -> dict[str, Any]:
    """``obj`` if it is a well-formed compiled object, else ObjectError."""
    try:
        _check(obj)
    except ObjectError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:
        raise ObjectError(f"malformed compiled object: {type(exc).__name__}: {exc}") from exc
    return obj  # type: ignore[no-any-return]


def _int(value: Any, lo: int = 0, hi: int = (1 << 32) - 1) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ObjectError(f"bad integer {value!r}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ObjectError(f"bad name {value!r}")
    return value


def _check(obj: Any) -> None:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ObjectError("not a compiled object of this format")
    if not isinstance(obj["license"], str) or not obj["license"].isprintable():
        raise ObjectError("bad license")
    _int(obj["kern_version"])
    maps, programs = obj["maps"], obj["programs"]
    if not isinstance(maps, dict) or not isinstance(programs, dict) or \
            len(maps) > MAX_MAPS or not 0 < len(programs) <= MAX_PROGRAMS:
        raise ObjectError("bad map or program table")
    for name, m in maps.items():
        _name(name)
        _name(m["kname"])
        if _int(m["type"]) not in MAP_TYPES:
            raise ObjectError(f"map {name}: unknown type {m['type']}")
        for field in ("key_size", "value_size", "max_entries", "flags"):
            _int(m[field])
        for field in ("key", "leaf"):
            if m[field] is not None and not isinstance(m[field], dict):
                raise ObjectError(f"map {name}: bad {field} layout")
    for name, p in programs.items():
        _name(name)
        if _int(p["type"]) not in PROG_TYPES:
            raise ObjectError(f"program {name}: unknown type {p['type']}")
        insns = base64.b64decode(p["insns"], validate=True)
        n = len(insns) // 8
        if not insns or len(insns) % 8 or n > MAX_INSNS:
            raise ObjectError(f"program {name}: bad instructions")
        for index, map_name in p["maps"]:
            _int(index, 0, n - 2)
            if map_name not in maps:
                raise ObjectError(f"program {name}: refers to unknown map {map_name!r}")
            code, regs, _, imm = INSN.unpack_from(insns, index * 8)
            if code != LD_IMM64 or regs >> 4 != PSEUDO_MAP_FD or imm != 0:
                raise ObjectError(f"program {name}: instruction {index} is no map reference")
        for index in p["self_tgid"]:
            if INSN.unpack_from(insns, _int(index, 0, n - 1) * 8)[3] != SELF_TGID_SENTINEL:
                raise ObjectError(f"program {name}: instruction {index} holds no sentinel")
        attach = p["attach"]
        if attach is not None:
            if attach.get("kind") not in ATTACH_KINDS:
                raise ObjectError(f"program {name}: unknown attachment {attach!r}")
            target = attach.get("target")
            if attach["kind"] != "cpu_clock" and \
                    (not isinstance(target, str) or not _TARGET.fullmatch(target)):
                raise ObjectError(f"program {name}: bad attach target {target!r}")
