"""First sight, warm look-ups and memory of the symbolizer's DWARF indexes (#21).

    .venv/bin/python bench/symbol_index.py [--objects 128] [--addresses 20000]

* first sight — one Symbolizer, empty index directory: the first address of
  a library (pyenv's libpython3.12.so: 13.7 MB of .debug_info; JDK 17's
  libjvm.so: .symtab only here), then ``--addresses`` random function
  addresses of it; CPU of this process and of the builder child, this
  process's RSS growth and the child's peak RSS;
* warm — the same addresses again through ``Symbolizer.native`` (result
  cache) and straight through the mapped index (``SymIndex.lookup``: what a
  result-cache miss costs);
* memory — ``--objects`` distinct shared libraries of this host symbolized
  (a few addresses each): RSS growth and the symbolizer's own account
  against ``cache_size``.

Measured (2 vCPUs; idle machine, empty index directory, warm page cache):

=============================  ==============================================
libpython3.12 (pyenv), first   0.84 s wall; CPU 0.05 s agent + 0.38 s child;
answer                         agent RSS +6 MB; child peak 72 MB (42 MB anon,
                               30 MB page cache of the library's DWARF)
20 000 cold addresses          agent CPU 0.56 s, RSS +30 MB (results, index)
warm, through the symbolizer   443 000 look-ups/s (result cache)
uncached index look-up         30 000/s (a result-cache miss)
index file                     7.4 MB on disk, mapped
libjvm.so (JDK 17, .symtab)    first answer 0.38 s; CPU 0.15 s; RSS +8 MB
128 libraries, cache_size      8 MiB: 112 kept (4.4 of 6 MB); RSS +13 MB
                               64 MiB: all kept (10 MB); RSS +12 MB
=============================  ==============================================

Under load (load average 27 from other jobs) the same run gave 2.6 s wall
for libpython's first answer at the same CPU (0.06 + 0.52 s).

libjvm.so *with* its debug file (openjdk-17-dbg 17.0.21: 156 MB file, 124 MB
of .debug_info; measured on the child alone, ``symcache_child.py``): 9.0 to
10.8 s of CPU at nice 19, child peak RSS 689 MB (543 MB anonymous), a 50 MB
index — within the default limits (RLIMIT_CPU 60 s, RLIMIT_AS 192 MiB + 4x
the file, at most 1 GiB), once per host; over them the DWARF is skipped and
the symbol table names its frames.

Compared with, on the same machine:

* the pyelftools CU walk this replaced: libpython's first address 0.29 s
  CPU, +39 MB; 2000 random addresses 45.9 s CPU, +1850 MB RSS (every CU a
  tree of Python objects); names, files and lines of 597 random addresses of
  libpython and a C++ program (700 inline frames) are identical between the
  two paths;
* ``llvm-symbolizer-14 --output-style=JSON --inlines`` as a long-lived child:
  first answer 0.23 s, 146 MB resident in the child for libpython alone
  (growing with every object it opens), 25 000 look-ups/s over its pipe;
  not installable from PyPI;
* ``symbolic`` (Sentry, SymCache) built in process: 0.44 s CPU, peak 74 MB —
  the choice, run in a child under rlimits and mapped afterwards.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telegen.procinfo.agent import resident_by_mapping  # noqa: E402
from telegen.symbols import Symbolizer, SymbolizerOptions  # noqa: E402
from telegen.symbols.elf import ElfFile  # noqa: E402

LIBPYTHON = "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0"
LIBJVM = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def offsets(path: str, count: int) -> list[int]:
    """File offsets of ``count`` random addresses inside functions."""
    elf = ElfFile(path)
    table = elf.symbols(".symtab") or elf.symbols(".dynsym")
    assert table is not None
    rng = random.Random(7)
    out = []
    for _ in range(count):
        i = rng.randrange(len(table))
        v = table.starts[i] + rng.randrange(max(1, table.ends[i] - table.starts[i]))
        seg = next((s for s in elf.segments if s.vaddr <= v < s.vaddr + s.filesz), None)
        if seg is not None:
            out.append(v - seg.vaddr + seg.offset)
    elf.close()
    return out


def first_sight(path: str, count: int, index_dir: str) -> None:
    offs = offsets(path, count)
    sym = Symbolizer(SymbolizerOptions(debuginfod_urls=[], index_dir=index_dir,
                                       index_wait_s=60.0))
    r0, (c0, k0) = rss_mb(), cpu()
    t0 = time.monotonic()
    res = sym.native(offs[0], file=path, start=0, offset=0)
    first = time.monotonic() - t0
    r1, (c1, k1) = rss_mb(), cpu()
    kids_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    for off in offs:
        sym.native(off, file=path, start=0, offset=0)
    r2, (c2, _k2) = rss_mb(), cpu()
    t0 = time.monotonic()
    for off in offs:
        sym.native(off, file=path, start=0, offset=0)
    warm = len(offs) / (time.monotonic() - t0)
    obj = next(iter(sym._objects.values()))
    job = obj._bin_job or obj._dbg_job
    mapped = ""
    if job is not None and job.index is not None:
        vaddrs = [obj.to_vaddr(o) or 0 for o in offs]
        t0 = time.monotonic()
        for v in vaddrs:
            job.index.lookup(v)
        mapped = (f", uncached index look-ups {len(vaddrs) / (time.monotonic() - t0):,.0f}/s, "
                  f"index {job.index.size / 2**20:.1f} MB "
                  f"({resident_by_mapping().get(job.index.address, 0) / 2**20:.1f} MB resident)")
    account = sum(sym._objects.getsizeof(o) for o in sym._objects.values()) / 2**20
    print(f"{os.path.basename(path)}: first answer {first:.2f} s wall "
          f"({res.source}: {res.lines[0].function if res.lines else '-'}), CPU agent "
          f"{c1 - c0:.2f} s + builder child {k1 - k0:.2f} s, agent RSS +{r1 - r0:.1f} MB, "
          f"child peak RSS {kids_peak:.0f} MB; {len(offs)} cold addresses: agent CPU "
          f"{c2 - c1:.2f} s, RSS +{r2 - r0:.1f} MB; warm {warm:,.0f}/s{mapped}; "
          f"symbolizer account {account:.1f} MB")
    sym.close()


def many_objects(count: int, cache_size: int, index_dir: str) -> None:
    libs = sorted({os.path.realpath(p) for p in glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")})
    libs = [p for p in libs if os.path.isfile(p)][:count]
    sym = Symbolizer(SymbolizerOptions(debuginfod_urls=[], index_dir=index_dir,
                                       cache_size=cache_size, index_wait_s=0.0))
    r0, (c0, _k0) = rss_mb(), cpu()
    done = 0
    for path in libs:
        try:
            offs = offsets(path, 20)
        except Exception:
            continue
        for off in offs:
            sym.native(off, file=path, start=0, offset=0)
        done += 1
    r1, (c1, _k1) = rss_mb(), cpu()
    kept = sum(sym._objects.getsizeof(o) for o in sym._objects.values())
    print(f"{done} objects, cache_size {cache_size / 2**20:.0f} MB: agent RSS +{r1 - r0:.1f} MB, "
          f"CPU {c1 - c0:.2f} s; objects kept {len(sym._objects)} ({kept / 2**20:.1f} MB "
          f"of {sym._objects.maxsize / 2**20:.1f}), results {sym._results.currsize / 2**20:.1f} MB")
    sym.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addresses", type=int, default=20000)
    ap.add_argument("--objects", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for path in (LIBPYTHON, LIBJVM):
            if os.path.exists(path):
                first_sight(path, args.addresses, os.path.join(d, "first"))
        for size in (8 << 20, 64 << 20):
            many_objects(args.objects, size, os.path.join(d, f"many{size}"))


if __name__ == "__main__":
    main()
