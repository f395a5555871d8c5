"""Cold and warm cost of symbolization.

    .venv/bin/python bench/symbolize.py [--addresses N] [--functions N]

* cold: opening libc and reading its symbol table (.dynsym; and the .symtab of
  libc6-dbg's debug file when installed) — target < 100 ms;
* warm: addresses/s through ``Symbolizer.native`` once every address was seen
  (libc, and a large C++ program with full DWARF built here) — target ≥ 500k/s;
* the same through the ``symbolize`` processor (frames/s, memo hits).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telegen.component import ComponentID, CreateSettings, Kind  # noqa: E402
from telegen.pdata import CPU, Frame, FrameKind, Mapping, Profile, Profiles  # noqa: E402
from telegen.processors.symbolize.config import SymbolizeConfig  # noqa: E402
from telegen.processors.symbolize.symbolize import SymbolizeProcessor  # noqa: E402
from telegen.symbols import Symbolizer, SymbolizerOptions  # noqa: E402
from telegen.symbols.elf import ElfFile  # noqa: E402
from telegen.telemetry import Registry  # noqa: E402
from telegen.testing.native import compile_c  # noqa: E402
from telegen.testing.sink import Sink  # noqa: E402

LIBC = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")


def big_cpp_source(n: int) -> str:
    """A C++ program with ``n`` distinct functions in namespaces, templates,
    inlined helpers and the standard library (map/string/vector) for DWARF bulk."""
    parts = ["#include <map>\n#include <string>\n#include <vector>\n#include <cstdio>\n",
             "template <typename T> static inline T mix(T a, T b) { return a * 31 + b; }\n"]
    for i in range(n):
        parts.append(
            f"namespace mod{i % 50} {{ struct Worker{i} {{ std::map<std::string, int> m; "
            f"__attribute__((noinline)) long run(long x); }};\n"
            f"long Worker{i}::run(long x) {{ std::vector<long> v(4, x); "
            f"m[std::to_string(x)] = (int)x; long s = 0; for (long e : v) s = mix(s, e + {i}); "
            f"return s + (long)m.size(); }} }}\n")
    parts.append("int main() { long s = 0;\n")
    for i in range(n):
        parts.append(f"  {{ mod{i % 50}::Worker{i} w; s += w.run(s); }}\n")
    parts.append('  std::printf("%ld\\n", s); return 0; }\n')
    return "".join(parts)


def whole_file_frames(path: str, vaddrs: list[int], base: int = 0x7f0000000000) -> list[Frame]:
    """Frames as if ``path`` were mapped whole at ``base`` (offset 0)."""
    elf = ElfFile(path)
    frames = []
    for v in vaddrs:
        seg = next(s for s in elf.segments if s.vaddr <= v < s.vaddr + s.memsz)
        frames.append(Frame(FrameKind.NATIVE, base + v - seg.vaddr + seg.offset,
                            Mapping(base, base + 1 << 30, 0, path)))
    elf.close()
    return frames


def function_addresses(path: str, table: str, count: int) -> list[int]:
    syms = ElfFile(path).symbols(table)
    assert syms is not None, f"{path} has no {table}"
    rng = random.Random(7)
    picks = []
    for _ in range(count):
        i = rng.randrange(len(syms))
        span = max(1, syms.ends[i] - syms.starts[i])
        picks.append(syms.starts[i] + rng.randrange(span))
    return picks


def measure(sym: Symbolizer, frames: list[Frame], rounds: int = 5) -> tuple[float, float]:
    """(cold seconds for the first pass, warm addresses/s over later passes)."""
    native = sym.native
    args = [(f.address, f.mapping.file, f.mapping.start, f.mapping.offset)
            for f in frames if f.mapping is not None]
    t0 = time.perf_counter()
    for address, file, start, offset in args:
        native(address, file=file, start=start, offset=offset)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for address, file, start, offset in args:
            native(address, file=file, start=start, offset=offset)
    return cold, rounds * len(args) / (time.perf_counter() - t0)


def processor_rate(frames: list[Frame], rounds: int = 5) -> float:
    reg = Registry()
    settings = CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                              reg.for_component("processor", "symbolize"),
                              logging.getLogger("bench"))
    proc = SymbolizeProcessor(settings, SymbolizeConfig(debuginfod_urls=[]), Sink())
    stacks = [tuple(frames[i:i + 16]) for i in range(0, len(frames) - 16, 16)]

    def batch() -> Profiles:
        p = Profile(name="cpu", sample_types=CPU)
        for st in stacks:
            p.add(st, [1, 1])
        return Profiles([p])

    proc.consume(batch())
    t0 = time.perf_counter()
    n = 0
    for _ in range(rounds):
        b = batch()
        n += sum(len(s.stack) for p in b for s in p)
        proc.consume(b)
    rate = n / (time.perf_counter() - t0)
    proc.shutdown()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addresses", type=int, default=20000)
    ap.add_argument("--functions", type=int, default=400)
    args = ap.parse_args()
    results: list[tuple[str, str, str]] = []

    t0 = time.perf_counter()
    elf = ElfFile(LIBC)
    dyn = elf.symbols(".dynsym")
    cold_dyn = (time.perf_counter() - t0) * 1e3
    results.append(("cold libc .dynsym load", f"{cold_dyn:.1f} ms ({len(dyn or [])} functions)",
                    "< 100 ms"))
    dbg = f"/usr/lib/debug/.build-id/{elf.build_id[:2]}/{elf.build_id[2:]}.debug"
    if os.path.exists(dbg):
        t0 = time.perf_counter()
        tab = ElfFile(dbg).symbols(".symtab")
        results.append(("cold libc .symtab load (libc6-dbg)",
                        f"{(time.perf_counter() - t0) * 1e3:.1f} ms ({len(tab or [])} functions)",
                        "< 100 ms"))
    t0 = time.perf_counter()
    sym = Symbolizer(SymbolizerOptions(debuginfod_urls=[]))
    first = whole_file_frames(LIBC, function_addresses(LIBC, ".dynsym", 1))[0]
    assert first.mapping is not None
    sym.native(first.address, file=LIBC, start=first.mapping.start, offset=0)
    results.append(("cold first libc address (open + tables + DWARF CU)",
                    f"{(time.perf_counter() - t0) * 1e3:.1f} ms", ""))

    libc_frames = whole_file_frames(LIBC, function_addresses(LIBC, ".dynsym", args.addresses))
    cold, warm = measure(sym, libc_frames)
    results.append((f"libc: {len(libc_frames)} addresses, first pass",
                    f"{cold * 1e3:.0f} ms ({cold / len(libc_frames) * 1e6:.0f} µs/address)", ""))
    results.append(("libc: warm", f"{warm / 1e3:.0f}k addresses/s", "≥ 500k/s"))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        big = compile_c(big_cpp_source(args.functions), Path(tmp) / "bigcpp",
                        flags=("-O2", "-g"), cxx=True)
        build_s = time.perf_counter() - t0
        size_mb = os.path.getsize(big) / 1e6
        results.append(("big C++ build (-O2 -g)",
                        f"{build_s:.1f} s, {size_mb:.1f} MB, {args.functions} classes", ""))
        big_frames = whole_file_frames(str(big), function_addresses(str(big), ".symtab",
                                                                    args.addresses))
        sym2 = Symbolizer(SymbolizerOptions(debuginfod_urls=[]))
        cold, warm = measure(sym2, big_frames)
        results.append((f"big C++ DWARF: {len(big_frames)} addresses, first pass",
                        f"{cold:.1f} s ({cold / len(big_frames) * 1e6:.0f} µs/address)", ""))
        results.append(("big C++ DWARF: warm", f"{warm / 1e3:.0f}k addresses/s", "≥ 500k/s"))
        rate = processor_rate(big_frames)
        results.append(("symbolize processor, warm (16-frame stacks)",
                        f"{rate / 1e3:.0f}k frames/s", ""))
        sym2.close()
    sym.close()

    width = max(len(r[0]) for r in results)
    for name, value, target in results:
        print(f"{name:<{width}}  {value:<40} {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
