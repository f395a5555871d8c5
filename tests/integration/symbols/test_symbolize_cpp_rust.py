"""C++ and Rust programs: demangled names, switchable off, from DWARF and symtab."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from native_programs import CPP_PROGRAM, RUST_PROGRAM

from telegen.testing.native import LiveProcess, compile_c, compile_rust, nm, process_frame

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("debug", [True, False], ids=["dwarf", "symtab"])
@pytest.mark.parametrize("demangle", [True, False], ids=["demangled", "raw"])
def test_cpp_method_names(tmp_path: Path, harness, debug: bool, demangle: bool) -> None:
    flags = ("-O2", "-g") if debug else ("-O2",)
    binary = compile_c(CPP_PROGRAM, tmp_path / "cppprog", flags=flags, cxx=True)
    mangled = "_ZN2ns5Klass6methodEi"
    syms = nm(binary)
    assert mangled in syms
    h = harness(demangle_cpp=demangle)
    with LiveProcess([str(binary)]) as live:
        (out,) = h.run((process_frame(live.pid, str(binary), syms[mangled] + 2),), live.pid)
    assert out.name == ("ns::Klass::method(int)" if demangle else mangled)
    assert out.lines[-1].system_name == (mangled if demangle else "")
    assert h.counter("symbolize_frames", source="dwarf" if debug else "symtab") == 1
    if debug:
        assert out.lines[-1].file.endswith("cppprog.cpp") and out.lines[-1].line > 0


def _rust_symbol(syms: dict[str, int], part: str) -> str:
    found = [n for n in syms if part in n and n.startswith(("_R", "_ZN5rdemo"))]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("mangling", ["v0", "legacy"])
@pytest.mark.parametrize("debuginfo", [0, 2], ids=["symtab", "dwarf"])
def test_rust_paths(tmp_path: Path, harness, mangling: str, debuginfo: int) -> None:
    binary = compile_rust(RUST_PROGRAM, tmp_path / "rdemo", mangling=mangling,
                          debuginfo=debuginfo)
    syms = nm(binary)
    compute = _rust_symbol(syms, "7compute")
    area = _rust_symbol(syms, "4area")
    assert compute.startswith("_R" if mangling == "v0" else "_ZN")
    on, off = harness(), harness(demangle_rust=False)
    with LiveProcess([str(binary)]) as live:
        stack = tuple(process_frame(live.pid, str(binary), syms[n] + 1) for n in (compute, area))
        got_on = on.run(stack, live.pid)
        got_off = off.run(stack, live.pid)
    assert got_on[0].name == "rdemo::shapes::compute"
    # v0 shows inherent methods as <Type>::method, legacy as Type::method
    assert re.fullmatch(r"<?rdemo::shapes::Circle>?::area", got_on[1].name), got_on[1].name
    assert [f.name for f in got_off] == [compute, area]
    source = "dwarf" if debuginfo else "symtab"
    assert on.counter("symbolize_frames", source=source) == 2
    if debuginfo:
        assert got_on[0].lines[-1].file.endswith("rdemo.rs")
