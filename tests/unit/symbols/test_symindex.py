"""DWARF indexes built by the limited child, kept on disk and mapped; first
sight without waiting; the byte budget; per-process state dropped on exit."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from telegen.symbols import Resolution, Symbolizer, SymbolizerOptions
from telegen.symbols.elf import ElfFile
from telegen.testing.native import compile_c

SOURCE = """
#include <stdio.h>
volatile long sink_value;
static inline __attribute__((always_inline)) long helper_inlined(long x) {
    sink_value = x;
    return sink_value * 7 + 3;
}
__attribute__((noinline)) long outer_function(long x) {
    long s = 0;
    for (long i = 0; i < x; i++) s += helper_inlined(i);
    return s;
}
int main(int argc, char **argv) { printf("%ld\\n", outer_function(argc * 1000)); return 0; }
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(SOURCE, tmp_path_factory.mktemp("idx") / "prog")


def function_offset(path: Path, name: str, plus: int = 0) -> int:
    elf = ElfFile(str(path))
    try:
        table = elf.symbols(".symtab")
        assert table is not None
        v = table.starts[table.names.index(name)] + plus
        seg = next(s for s in elf.segments if s.vaddr <= v < s.vaddr + s.filesz)
        return v - seg.vaddr + seg.offset
    finally:
        elf.close()


def inlined_offset(path: Path) -> int:
    """A file offset inside helper_inlined's code in outer_function (addr2line -i)."""
    start = function_offset(path, "outer_function")
    addrs = [hex(start + d) for d in range(0, 256)]
    out = subprocess.run(["addr2line", "-a", "-f", "-i", "-e", str(path), *addrs],
                         capture_output=True, text=True, check=True).stdout
    for block in out.split("0x")[1:]:
        lines = block.split("\n")
        if len(lines) > 1 and lines[1] == "helper_inlined":
            return int(lines[0], 16)
    pytest.skip("gcc placed no code of helper_inlined where addr2line sees it")


def options(tmp: Path, **kw: object) -> SymbolizerOptions:
    return SymbolizerOptions(debug_dirs=(), debuginfod_urls=[], index_dir=str(tmp / "index"),
                             **kw)  # type: ignore[arg-type]


def test_inline_chain_from_the_index_equals_addr2line(program: Path, tmp_path: Path) -> None:
    off = inlined_offset(program)
    sym = Symbolizer(options(tmp_path, index_wait_s=30.0))
    res = sym.native(off, file=str(program), start=0, offset=0)
    want = subprocess.run(["addr2line", "-f", "-i", "-e", str(program), hex(off)],
                          capture_output=True, text=True, check=True).stdout.split("\n")
    names, places = want[0::2], want[1::2]
    assert res.source == "dwarf" and not res.pending
    assert [ln.function for ln in res.lines] == [n for n in names if n]
    assert [(os.path.basename(ln.file), ln.line) for ln in res.lines] == [
        (os.path.basename(p.split(":")[0]), int(p.split(":")[1].split()[0]))
        for p in places if p]
    sym.close()


def test_first_sight_does_not_wait_and_is_not_cached(program: Path, tmp_path: Path) -> None:
    """With no wait left the frame goes out at once with its symbol-table
    name, marked pending and counted; once the child built the index the
    same address is answered from DWARF. A second symbolizer opens the index
    from disk: nothing built again."""
    off = function_offset(program, "outer_function", 4)
    sym = Symbolizer(options(tmp_path, index_wait_s=0.0))
    t0 = time.monotonic()
    first = sym.native(off, file=str(program), start=0, offset=0)
    assert time.monotonic() - t0 < 0.5
    assert first.pending and first.source == "symtab"
    assert first.lines[0].function == "outer_function" and sym.provisional_frames == 1
    deadline = time.monotonic() + 60
    res = first
    while res.pending and time.monotonic() < deadline:
        time.sleep(0.05)
        res = sym.native(off, file=str(program), start=0, offset=0)
    assert res.source == "dwarf" and res.lines[-1].function == "outer_function"
    assert res.lines[-1].line > 0 and sym.builder.built == 1
    again = Symbolizer(options(tmp_path, index_wait_s=0.0))
    hit = again.native(off, file=str(program), start=0, offset=0)
    assert hit == res and again.builder.built == 0
    sym.close()
    again.close()


def test_memory_is_bounded_in_bytes(tmp_path: Path) -> None:
    """40 libraries of this host through a 4 MiB budget: what is kept stays
    within its shares, least recently used objects closed."""
    libs = sorted({os.path.realpath(p) for p in Path("/usr/lib/x86_64-linux-gnu").glob("*.so*")
                   if os.path.isfile(p)})[:40]
    sym = Symbolizer(options(tmp_path, cache_size=4 << 20, index_wait_s=0.0))
    for path in libs:
        elf = ElfFile(path)
        table = elf.symbols(".dynsym")
        elf.close()
        if table is None:
            continue
        for i in range(0, len(table), max(1, len(table) // 20)):
            sym.native(table.starts[i], file=path, start=0, offset=0)
    kept = sum(sym._objects.getsizeof(o) for o in sym._objects.values())
    assert 0 < kept <= sym._objects.maxsize <= sym.cache_bytes
    assert sym._results.currsize <= sym._results.maxsize
    assert len(sym._objects) < len(libs)
    sym.close()


def test_state_of_exited_processes_is_dropped(program: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    sym = Symbolizer(options(tmp_path, index_wait_s=0.0))
    sym.native(function_offset(program, "main"), file=str(program), start=0, offset=0,
               pid=proc.pid)
    assert any(k[0] == proc.pid for k in sym._keys)
    proc.kill()
    proc.wait()
    sym._swept = 0.0            # the next look-up sweeps
    sym.native(function_offset(program, "main"), file=str(program), start=0, offset=0)
    assert not any(k[0] == proc.pid for k in sym._keys)
    sym.close()


def test_a_debuginfod_download_does_not_hold_other_lookups(program: Path,
                                                           tmp_path: Path) -> None:
    """A stripped binary whose debug file comes from a stalled debuginfod:
    its frame waits (outside the symbolizer's lock) while another thread's
    look-up of another binary answers at once; once the server answers, the
    stripped binary is named from the downloaded file's DWARF index."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from telegen.symbols.elf import read_build_id
    from telegen.testing.native import split_debug

    stripped = tmp_path / "stripped"
    stripped.write_bytes(program.read_bytes())
    debug = split_debug(stripped, tmp_path / "stripped.debug")
    build_id = read_build_id(str(stripped))
    assert build_id
    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if build_id not in self.path:
                self.send_error(404)
                return
            release.wait(20)
            body = debug.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sym = Symbolizer(SymbolizerOptions(
        debug_dirs=(), debuginfod_urls=[f"http://127.0.0.1:{server.server_address[1]}"],
        debuginfod_cache_dir=str(tmp_path / "dl"), debuginfod_timeout_s=30.0,
        index_dir=str(tmp_path / "index"), index_wait_s=2.0))
    off = function_offset(program, "outer_function", 4)    # the same layout, stripped
    waited: list[object] = []
    waiter = threading.Thread(target=lambda: waited.append(
        sym.native(off, file=str(stripped), start=0, offset=0)))
    try:
        waiter.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        other = sym.native(0x1100, file="/usr/bin/true", start=0, offset=0)
        assert time.monotonic() - t0 < 1.0 and waiter.is_alive()
        assert other.source in ("symtab", "dynsym", "unknown")
        waiter.join(10)
        first = waited[0] if waited else None
        assert isinstance(first, Resolution) and first.pending and not first.lines
        release.set()
        deadline = time.monotonic() + 60
        res = sym.native(off, file=str(stripped), start=0, offset=0)
        while (res.pending or res.source != "debuginfod") and time.monotonic() < deadline:
            time.sleep(0.1)
            res = sym.native(off, file=str(stripped), start=0, offset=0)
        assert res.source == "debuginfod" and res.lines[-1].function == "outer_function"
        assert res.lines[-1].line > 0 and not res.pending
    finally:
        release.set()
        server.shutdown()
        sym.close()


def test_glibc_names_and_paths_as_dwarf_gives_them(tmp_path: Path) -> None:
    """Debian's libc6-dbg (DWARF 5, relative compilation directories, asm
    labels for internal aliases): ``_IO_setb`` in ``libio/genops.c``, not
    ``__GI__IO_setb`` in ``libio/libio/genops.c`` as SymCache spells them."""
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    from telegen.symbols.elf import read_build_id
    bid = read_build_id(libc)
    if not os.path.exists(f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"):
        pytest.fail("libc6-dbg is not installed (scripts/setup-host.sh installs it)")
    elf = ElfFile(libc)
    table = elf.symbols(".dynsym")
    assert table is not None
    v = table.starts[table.names.index("_IO_setb")] + 4
    seg = next(s for s in elf.segments if s.vaddr <= v < s.vaddr + s.filesz)
    elf.close()
    sym = Symbolizer(SymbolizerOptions(debuginfod_urls=[], index_dir=str(tmp_path / "index"),
                                       index_wait_s=60.0))
    res = sym.native(v - seg.vaddr + seg.offset, file=libc, start=0, offset=0)
    assert res.source == "debuginfo_file"
    assert [(ln.function, ln.file) for ln in res.lines][-1] == ("_IO_setb", "libio/genops.c")
    sym.close()


COLD_SOURCE = """
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline, cold)) void report(long x) { fprintf(stderr, "odd %ld\\n", x); }
__attribute__((noinline)) long hot_function(long x) {
    long s = 0;
    for (long i = 0; i < x; i++) {
        if (__builtin_expect(i == 123456789, 0)) { report(i); abort(); }
        s += i * 3;
    }
    return s;
}
int main(int argc, char **argv) { printf("%ld\\n", hot_function(argc * 1000)); return 0; }
"""


def test_a_function_split_hot_and_cold_is_named_in_both_parts(tmp_path: Path) -> None:
    """gcc moves the unlikely path to ``hot_function.cold`` (below the hot
    part); SymCache names the whole function by the symbol at its lowest
    address. Both parts come out as ``hot_function``, with lines, as
    addr2line names them — also with an empty decoy symbol added at the cold
    part's address (in libpython 3.12 SymCache took such a one,
    ``ast2obj_expr.cold``, for ``_PyEval_EvalFrameDefault``)."""
    prog = compile_c(COLD_SOURCE, tmp_path / "cold")
    elf = ElfFile(str(prog))
    table = elf.symbols(".symtab")
    assert table is not None
    names = table.names
    if "hot_function.cold" not in names:
        pytest.skip("gcc made no cold part")
    text = elf.headers.section(".text")
    assert text is not None
    cold_at = table.starts[names.index("hot_function.cold")]
    elf.close()
    decoyed = tmp_path / "decoyed"
    subprocess.run(["objcopy", "--add-symbol",
                    f"a_decoy.cold=.text:{cold_at - text.addr:#x},local,function",
                    str(prog), str(decoyed)], check=True)
    sym = Symbolizer(options(tmp_path, index_wait_s=60.0))
    for binary in (prog, decoyed):
        for off in (function_offset(binary, "hot_function", 8),
                    function_offset(binary, "hot_function.cold", 2)):
            res = sym.native(off, file=str(binary), start=0, offset=0)
            want = subprocess.run(["addr2line", "-f", "-e", str(binary), hex(off)],
                                  capture_output=True, text=True, check=True).stdout.split()
            assert res.source == "dwarf"
            assert (res.lines[-1].function, res.lines[0].line) == (
                "hot_function", int(want[1].split(":")[1].split()[0])), (binary, hex(off))
    sym.close()


def test_resident_indexes_give_pages_back_instead_of_reopening(tmp_path: Path) -> None:
    """Three libpythons with DWARF (pyenv builds) looked up in turn, again
    and again, through the smallest budget: the mapped indexes' pages in the
    agent's page tables (smaps, not the page cache) are given back at each
    sweep, and no object is closed and re-opened (a cyclic re-open of each
    library's symbol tables per window was 20% of a core on a host)."""
    from telegen.procinfo.agent import resident_by_mapping
    from telegen.testing.pyprog import pyenv_python

    libs = []
    for version in ("3.11", "3.12", "3.13"):
        exe = pyenv_python(version)
        assert exe is not None, f"pyenv CPython {version} (MACHINE.md)"
        libs.append(str(Path(exe).resolve().parent.parent / "lib" /
                        f"libpython{version}.so.1.0"))
    sym = Symbolizer(options(tmp_path, cache_size=4 << 20, index_wait_s=0.0))
    opened: list[object] = []
    real_open = sym._open

    def counting_open(*args: object) -> object:
        opened.append(args)
        return real_open(*args)  # type: ignore[arg-type]

    sym._open = counting_open  # type: ignore[method-assign]
    spots = {}
    for path in libs:
        elf = ElfFile(path)
        table = elf.symbols(".symtab")
        segments = elf.segments
        elf.close()
        assert table is not None
        picked = table.starts[:: max(1, len(table.starts) // 400)]
        spots[path] = [v - s.vaddr + s.offset for v in picked for s in segments
                       if s.vaddr <= v < s.vaddr + s.filesz]
    for path in libs:          # first sight: the nice-19 child builds each index
        deadline = time.monotonic() + 240
        while sym.native(spots[path][1], file=path, start=0, offset=0).pending:
            assert time.monotonic() < deadline, f"index of {path} not built"
            time.sleep(0.2)
    resident_after_sweep = []
    sources: dict[str, int] = {}
    for rnd in range(3):
        for path in libs:
            for off in spots[path]:
                res = sym.native(off + 1 + rnd, file=path, start=0, offset=0)
                assert not res.pending, (path, res)
                sources[res.source] = sources.get(res.source, 0) + 1
            sym._swept = sym._measured = 0.0    # the next (uncached) look-up sweeps
            sym.native(spots[path][0] + 64 + rnd, file=path, start=0, offset=0)
            rss = resident_by_mapping()
            kept = [o for o in sym._objects.values()]
            resident_after_sweep.append(sum(
                rss.get(j.index.address, 0) for o in kept
                for j in (o._bin_job, o._dbg_job) if j is not None and j.index is not None))
    assert sources.get("dwarf", 0) > 0.8 * sum(sources.values()), sources
    assert len(opened) == len(libs), f"objects re-opened: {len(opened)} opens"
    assert max(resident_after_sweep) <= sym._objects.maxsize, resident_after_sweep
    sym.close()
