"""The compiled-object format: map references and SELF_TGID found in BCC's
instructions, written back for this process, and malformed objects refused
before anything reaches the kernel."""

from __future__ import annotations

import base64
import copy
import struct
from typing import Any

import pytest

from telegen.bpf import compiled
from telegen.bpf.compiled import INSN, SELF_TGID_SENTINEL, ObjectError

MOV64_K, JEQ_K, EXIT, CALL = 0xB7, 0x15, 0x95, 0x85


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return INSN.pack(code, src << 4 | dst, off, imm)


def program(map_fd: int = 7) -> bytes:
    """r1 = map (fd); if r6 == SELF_TGID goto +1; r0 = 0; exit"""
    return b"".join([
        insn(compiled.LD_IMM64, 1, compiled.PSEUDO_MAP_FD, imm=map_fd), insn(0),
        insn(JEQ_K, 6, off=1, imm=SELF_TGID_SENTINEL),
        insn(MOV64_K, 0), insn(EXIT)])


def obj_of(insns: bytes, relocs: list[list[Any]], sites: list[int]) -> dict[str, Any]:
    return {"format": compiled.FORMAT, "license": "GPL", "kern_version": 0,
            "maps": {"counts": {"kname": "counts", "type": 1, "key_size": 4, "value_size": 8,
                                "max_entries": 16, "flags": 0, "key": {"scalar": "I"},
                                "leaf": {"scalar": "Q"}}},
            "programs": {"on_cpu_sample": {"type": 7, "attach": {"kind": "cpu_clock"},
                                           "maps": relocs, "self_tgid": sites,
                                           "insns": base64.b64encode(insns).decode()}}}


def test_map_fds_are_found_zeroed_and_written_back_with_this_processes_fd() -> None:
    out, relocs, sites = compiled.extract_relocations(program(7), {7: "counts"})
    assert relocs == [[0, "counts"]] and sites == [2]
    assert INSN.unpack_from(out, 0)[3] == 0               # no stale fd kept
    obj = compiled.check(obj_of(out, relocs, sites))
    final = compiled.relocate(obj["programs"]["on_cpu_sample"], {"counts": 42}, 4321)
    assert INSN.unpack_from(final, 0)[3] == 42
    assert INSN.unpack_from(final, 16)[3] == 4321         # the agent's pid, not the sentinel
    assert final[24:] == program()[24:]                  # the rest untouched


def test_an_fd_that_is_no_map_and_unknown_pseudo_sources_are_refused() -> None:
    with pytest.raises(ObjectError, match="not a map"):
        compiled.extract_relocations(program(9), {7: "counts"})
    value = insn(compiled.LD_IMM64, 1, 2, imm=7) + insn(0)      # BPF_PSEUDO_MAP_VALUE
    with pytest.raises(ObjectError, match="unsupported"):
        compiled.extract_relocations(value, {7: "counts"})
    with pytest.raises(ObjectError, match="truncated"):
        compiled.extract_relocations(insn(compiled.LD_IMM64, 1, 1, imm=7), {7: "counts"})


def test_a_64_bit_constant_is_not_taken_for_the_sentinel() -> None:
    wide = insn(compiled.LD_IMM64, 2, imm=SELF_TGID_SENTINEL) + insn(0, imm=1) + insn(EXIT)
    assert compiled.extract_relocations(wide, {})[2] == []


def _good() -> dict[str, Any]:
    out, relocs, sites = compiled.extract_relocations(program(), {7: "counts"})
    return obj_of(out, relocs, sites)


def _set(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(_good())
    *parents, last = path.split(".")
    node: Any = obj
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


P = "programs.on_cpu_sample"


@pytest.mark.parametrize("path,value", [
    ("format", 99),
    ("kern_version", -1),
    ("maps.counts.type", 30),                          # not a map type telegen declares
    ("maps.counts.max_entries", "16"),
    ("maps.counts.kname", "../x"),
    (f"{P}.type", 26),                                 # a program type it does not load
    (f"{P}.insns", base64.b64encode(b"\x95" * 7).decode()),   # not whole instructions
    (f"{P}.insns", "not base64!"),
    (f"{P}.maps", [[2, "counts"]]),                    # reloc on an instruction that is none
    (f"{P}.maps", [[0, "elsewhere"]]),                 # unknown map
    (f"{P}.maps", [[10 ** 6, "counts"]]),              # out of range
    (f"{P}.self_tgid", [3]),                           # no sentinel there
    (f"{P}.attach", {"kind": "kprobe", "target": "x"}),
    (f"{P}.attach", {"kind": "tracepoint", "target": "../../x"}),
])
def test_malformed_objects_are_refused(path: str, value: Any) -> None:
    compiled.check(_good())
    with pytest.raises(ObjectError):
        compiled.check(_set(path, value))


def test_relocate_refuses_a_site_without_the_sentinel() -> None:
    p = copy.deepcopy(_good()["programs"]["on_cpu_sample"])
    p["self_tgid"] = [0]
    with pytest.raises(ObjectError):
        compiled.relocate(p, {"counts": 3}, 1)
    assert struct.calcsize("<BBhi") == 8


def _second(map_name: str = "counts", max_entries: int = 16) -> dict[str, Any]:
    """Another phase's object: its own program on the shared map (and one of its own)."""
    obj = copy.deepcopy(_good())
    obj["maps"][map_name] = dict(obj["maps"]["counts"], max_entries=max_entries)
    obj["maps"]["starts"] = dict(obj["maps"]["counts"], kname="starts")
    p = obj["programs"].pop("on_cpu_sample")
    obj["programs"]["tracepoint__sched__sched_switch"] = dict(
        p, type=5, attach={"kind": "tracepoint", "target": "sched:sched_switch"})
    return obj


def test_two_phases_merge_into_one_object_with_one_map_of_each_name() -> None:
    merged = compiled.merge(_good(), _second())
    assert set(merged["maps"]) == {"counts", "starts"}
    assert set(merged["programs"]) == {"on_cpu_sample", "tracepoint__sched__sched_switch"}
    assert merged["maps"]["counts"] == _good()["maps"]["counts"]


def test_a_merge_refuses_two_definitions_of_a_map_and_a_program_twice() -> None:
    with pytest.raises(ObjectError, match="two definitions"):
        compiled.merge(_good(), _second(max_entries=32))
    with pytest.raises(ObjectError, match="in both objects"):
        compiled.merge(_good(), _good())
    other = _second()
    other["license"] = "Dual BSD/GPL"
    with pytest.raises(ObjectError, match="licenses"):
        compiled.merge(_good(), other)
