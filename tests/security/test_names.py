"""Hostile names: symbol names chosen by whoever built a profiled binary.

* A name holding a newline (or a NUL) must not put the long-lived ``c++filt``
  out of step: every later name still demangles to its own answer.
* Names printed on a terminal (console exporter, ``telegen top``) carry no
  control characters: an ESC sequence in a symbol is shown escaped, never
  interpreted by the terminal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from telegen.pdata import (
    CPU,
    Frame,
    FrameKind,
    Line,
    Mapping,
    Profile,
    Profiles,
    ValueType,
    make_labels,
)
from telegen.symbols import Symbolizer, SymbolizerOptions
from telegen.symbols.demangle import Demangler
from telegen.symbols.elf import ElfFile
from telegen.testing import require
from telegen.testing.native import compile_c

EVIL_LABEL = b"_Z4evilvQ_Z3fooi"          # patched to "_Z4evilv\n_Z3fooi" in the binary
EVIL_NAME = "_Z4evilv\n_Z3fooi"
NORMAL = {   # mangled -> what c++filt says
    "_ZN3app5firstEv": "app::first()",
    "_ZN3app6secondEi": "app::second(int)",
    "_ZN3app5thirdEd": "app::third(double)",
    "_ZN3app6fourthEPKc": "app::fourth(char const*)",
}

SOURCE = "\n".join([
    f'void evil(void) __asm__("{EVIL_LABEL.decode()}");',
    "void evil(void) { __asm__ volatile(\"\"); }",
    *(f'void f{i}(void) __asm__("{name}");\nvoid f{i}(void) {{ __asm__ volatile(""); }}'
      for i, name in enumerate(NORMAL)),
    "int main(void) { evil(); f0(); f1(); f2(); f3(); return 0; }",
    "",
])


@pytest.fixture(autouse=True)
def _cxxfilt() -> None:
    require.tools("c++filt", "cc", provider="binutils, gcc, scripts/setup-host.sh")


@pytest.fixture(scope="module")
def evil_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ELF whose .symtab holds a name with a newline in it."""
    out = tmp_path_factory.mktemp("names") / "evil"
    compile_c(SOURCE, out, flags=("-O0",))
    data = out.read_bytes()
    assert data.count(EVIL_LABEL) == 1
    out.write_bytes(data.replace(EVIL_LABEL, EVIL_NAME.encode()))
    return out


def test_the_binary_carries_the_newline_name(evil_binary: Path) -> None:
    table = ElfFile(str(evil_binary)).symbols(".symtab")
    assert table is not None
    assert EVIL_NAME in table.names
    assert set(NORMAL) <= set(table.names)


def test_newline_in_an_elf_symbol_does_not_shift_later_names(evil_binary: Path) -> None:
    """Through the symbolizer: the evil function is resolved first, then every
    normal one — each must come back as its own demangled name."""
    table = ElfFile(str(evil_binary)).symbols(".symtab")
    assert table is not None
    address = {name: table.starts[i] for i, name in enumerate(table.names)}
    sym = Symbolizer(SymbolizerOptions(debuginfod_urls=[], debug_dirs=()))
    try:
        order = [EVIL_NAME, *NORMAL, EVIL_NAME, *reversed(list(NORMAL))]
        for name in order:
            res = sym.native(address[name], file=str(evil_binary), start=0, offset=0)
            assert res.lines, name
            got = res.lines[-1].function
            if name == EVIL_NAME:
                assert got == EVIL_NAME          # not demangled: never sent down the pipe
            else:
                assert got == NORMAL[name], (name, got)
        assert sym.demangler.refused >= 1
    finally:
        sym.close()


def test_through_the_processor_the_refused_name_is_counted(evil_binary: Path,
                                                          tmp_path: Path) -> None:
    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.processors.symbolize.config import SymbolizeConfig
    from telegen.processors.symbolize.symbolize import SymbolizeProcessor
    from telegen.telemetry import Registry
    from telegen.testing.sink import Sink

    table = ElfFile(str(evil_binary)).symbols(".symtab")
    assert table is not None
    address = {name: table.starts[i] for i, name in enumerate(table.names)}
    reg, sink = Registry(), Sink()
    proc = SymbolizeProcessor(
        CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                       reg.for_component("processor", "symbolize"), logging.getLogger("t")),
        SymbolizeConfig(debuginfod_urls=[], debug_dirs=[str(tmp_path / "none")],
                        debuginfod_cache_dir=str(tmp_path / "c")), sink)
    try:
        for name in [EVIL_NAME, *NORMAL]:
            p = Profile(name="cpu", sample_types=CPU)
            mapping = Mapping(0, 1 << 20, 0, str(evil_binary))
            p.add((Frame(FrameKind.NATIVE, address[name], mapping),), [1, 1],
                  make_labels(**{"process.pid": 0}))
            proc.consume(Profiles([p]))
    finally:
        proc.shutdown()
    got = [s.stack[0].name for prof in sink.profiles() for s in prof]
    assert got == [EVIL_NAME, *NORMAL.values()], got
    key = ('refused_inputs{component="symbolize",kind="processor",'
           'reason="unsendable_name",source="demangle"}')
    assert reg.snapshot().get(key) == 1


def test_newline_nul_and_overlong_names_with_a_direct_demangler() -> None:
    d = Demangler()
    try:
        hostile = ["_Z3f\nooi", "_Z3fooi\n", "_Z3f\x00ooi", "_Z3foo\r\n_Z3bari",
                   "_Z" + "1a" * 5000, "_Z3foo\x1b[2Ji"]
        for i in range(3):
            for bad in hostile:
                name = f"_Z{i}{bad[2:]}"          # a new name each round, still hostile
                assert d.demangle(name) == name
            for mangled, plain in NORMAL.items():
                assert d.demangle(mangled + f".cold.{i}").startswith(plain), mangled
        assert d.refused == 3 * len(hostile)
    finally:
        d.close()


def test_a_slow_answer_is_cut_at_the_deadline_and_the_next_name_is_right(
        tmp_path: Path) -> None:
    """A c++filt stuck on one name (here: a stand-in that sleeps on it) is
    killed at the deadline; the name stays mangled and the next one is right."""
    fake = tmp_path / "slowfilt"
    fake.write_text("#!/bin/sh\n"
                    "while IFS= read -r line; do\n"
                    "  case \"$line\" in _Z4slowv) exec sleep 5;; esac\n"
                    "  c=$(printf '%s\\n' \"$line\" | c++filt); printf '%s\\n' \"$c\"\n"
                    "done\n")
    fake.chmod(0o755)
    d = Demangler(tool=str(fake), deadline_s=0.5)
    try:
        assert d.demangle("_ZN3app5firstEv") == "app::first()"
        assert d.demangle("_Z4slowv") == "_Z4slowv"
        assert d.timeouts == 1
        assert d.demangle("_ZN3app6secondEi") == "app::second(int)"
    finally:
        d.close()


ESC_LABEL = b"term_XXXXXXXX_clear"          # patched to ESC sequences in the binary
ESC_BYTES = b"\x1b[2J\x1b]0;"               # clear screen, then set the window title…
ESC_NAME = "term_" + ESC_BYTES.decode() + "_clear"
PWNED = "\x1b]0;pwned\x07\x1b[31mfake\x9b1mrow\n0s 100% 100% 0s 100% liar\x7f"


@pytest.fixture(scope="module")
def esc_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ELF with a function whose .symtab name holds terminal escapes."""
    out = tmp_path_factory.mktemp("esc") / "esc"
    source = (f'void term(void) __asm__("{ESC_LABEL.decode()}");\n'
              'void term(void) { __asm__ volatile(""); }\n'
              "int main(void) { term(); return 0; }\n")
    compile_c(source, out, flags=("-O0",))
    data = out.read_bytes()
    assert data.count(ESC_LABEL) == 1 and len(ESC_BYTES) == len(b"XXXXXXXX")
    out.write_bytes(data.replace(ESC_LABEL, b"term_" + ESC_BYTES + b"_clear"))
    return out


def _symbolized_profile(esc_binary: Path) -> Profile:
    table = ElfFile(str(esc_binary)).symbols(".symtab")
    assert table is not None and ESC_NAME in table.names
    address = table.starts[table.names.index(ESC_NAME)]
    sym = Symbolizer(SymbolizerOptions(debuginfod_urls=[], debug_dirs=()))
    try:
        res = sym.native(address, file=str(esc_binary), start=0, offset=0)
    finally:
        sym.close()
    assert res.lines and res.lines[-1].function == ESC_NAME   # the raw name reached pdata
    profile = Profile(name="cpu\x1b[8m", sample_types=CPU, period=10_000_000,
                      start_ns=1_700_000_000 * 10**9, duration_ns=10**10)
    leaf = Frame(FrameKind.NATIVE, address, None, (Line(ESC_NAME),))
    pushed = Frame(FrameKind.NATIVE, 0, None, (Line(PWNED),))
    main = Frame(FrameKind.NATIVE, 0, None, (Line("main"),))
    profile.add((leaf, main), [70, 700_000_000], make_labels(**{"process.pid": 1}))
    profile.add((pushed, main), [30, 300_000_000], make_labels(**{"process.pid": 1}))
    return profile


def _assert_terminal_safe(text: str) -> None:
    bad = [hex(ord(c)) for c in text if c != "\n" and not c.isprintable()]
    assert not bad, bad
    assert "\\x1b[2J" in text                   # shown, escaped
    assert "\\x9b1mrow\\x0a0s 100%" in text       # the forged row stays on its line


def test_console_exporter_escapes_control_characters(
        esc_binary: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from telegen.component import ComponentID, CreateSettings, Kind
    from telegen.exporters.console.config import ConsoleConfig
    from telegen.exporters.console.console import ConsoleExporter
    from telegen.telemetry import Registry

    reg = Registry()
    exporter = ConsoleExporter(CreateSettings(ComponentID("console"), Kind.EXPORTER,
                                              reg.for_component("exporter", "console"),
                                              logging.getLogger("t")), ConsoleConfig())
    exporter.consume(Profiles([_symbolized_profile(esc_binary)]))
    out = capsys.readouterr().out
    _assert_terminal_safe(out)
    assert "term_\\x1b[2J\\x1b]0;_clear" in out
    assert "== cpu\\x1b[8m profile" in out
    assert len([ln for ln in out.splitlines() if ln.endswith("main")]) == 1


def test_telegen_top_escapes_control_characters(esc_binary: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from telegen.formats import pprof

    path = tmp_path / "hostile.pb.gz"
    path.write_bytes(pprof.encode(_symbolized_profile(esc_binary)))
    run = subprocess.run([sys.executable, "-m", "telegen", "top", str(path)],
                         capture_output=True, check=True)
    out = run.stdout.decode("utf-8")
    _assert_terminal_safe(out)
    assert "term_\\x1b[2J\\x1b]0;_clear" in out
    # an unknown --type: the error lists the file's sample types, escaped too
    odd = Profile(name="x", sample_types=(ValueType("evil\x1b[2J", "count"),))
    odd.add((Frame(FrameKind.NATIVE, 0, None, (Line("main"),)),), [1])
    path.write_bytes(pprof.encode(odd))
    bad_type = subprocess.run([sys.executable, "-m", "telegen", "top", str(path),
                               "--type", "nope"], capture_output=True)
    assert bad_type.returncode != 0
    err = bad_type.stderr.decode("utf-8")
    assert "evil\\x1b[2J/count" in err, err
    assert not [c for c in err if c != "\n" and not c.isprintable()], err


def test_telegen_diff_escapes_control_characters(esc_binary: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from telegen.formats import pprof

    base, new = tmp_path / "base.pb.gz", tmp_path / "new.pb.gz"
    base.write_bytes(pprof.encode(_symbolized_profile(esc_binary)))
    grown = _symbolized_profile(esc_binary)
    grown.add((Frame(FrameKind.NATIVE, 0, None, (Line(ESC_NAME),)),), [50, 500_000_000],
              make_labels(**{"process.pid": 1}))
    new.write_bytes(pprof.encode(grown))
    run = subprocess.run([sys.executable, "-m", "telegen", "diff", str(base), str(new)],
                         capture_output=True, check=True)
    out = run.stdout.decode("utf-8")
    _assert_terminal_safe(out)
