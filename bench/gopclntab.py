"""Go symbols from ``.gopclntab`` (#26): cost of first sight, warm look-ups,
memory, and agreement with DWARF, on stripped Go binaries of this machine.

    .venv/bin/python bench/gopclntab.py [--pcs 2000] [--runs 5]

Binaries: a copy of ``/usr/local/bin/docker`` (go1.24.3, 42 MB) stripped with
``objcopy --strip-all`` (its pclntab sits in ``.data.rel.ro``: found by
scanning), and the Go test services (tests/testdata/go) built with Debian's
Go 1.19 and ``-ldflags="-s -w"``.

* first sight — a fresh reader and an empty cache directory: open (find the
  pclntab and moduledata by pread, copy what the reader needs) + the
  look-ups of ``--pcs`` random pcs in Go code; CPU of this process; the first
  run and the median of ``--runs``;
* warm — the same pcs again through the same reader (decoded tables cached);
* second sight — opening again: the agent's copy (sparse file of the bytes
  the reader needs, under ``cache_dir("gopclntab")``) is reused, no search;
* memory — the reader's Python heap after the look-ups (tracemalloc) and this
  process's growth of file-backed RSS (the mapped pclntab pages: shared,
  evictable page cache);
* agreement — ``--pcs`` pcs, half in inlined code, whose whole chain (names,
  files, lines) equals llvm-symbolizer's reading of the unstripped binary's
  DWARF; strict, and with DWARF names spelled as the Go runtime spells them
  (no ``.abi0``; ``[...]`` for type arguments where the pclntab elides them).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telegen.symbols.gopclntab import GoFunctions  # noqa: E402
from telegen.testing.gotruth import (  # noqa: E402
    DOCKER,
    SYMBOLIZER,
    agreement,
    dwarf_truth,
    go_build,
    sample_pcs,
    strip_copy,
)

TESTDATA = Path(__file__).resolve().parents[1] / "tests" / "testdata" / "go"
CACHE = ""     # the reader's copies: a new empty directory per first-sight run


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for row in f:
            if row.startswith(field + ":"):
                return int(row.split()[1])
    return 0


def _random_pcs(path: Path, n: int, seed: int) -> list[int]:
    go = GoFunctions.open_path(str(path))
    assert go is not None
    rng = random.Random(seed)
    lo, hi = go.func_entry(go.tab.text_start) or go.tab.text_start, go._entry_at(go.nfunc)
    go.close()
    return [rng.randrange(lo, hi) for _ in range(n)]


def measure(name: str, original: Path, stripped: Path, n: int, runs: int) -> dict[str, str]:
    pcs = _random_pcs(stripped, n, seed=26)
    firsts, seconds = [], []
    for run in range(runs):
        os.environ["TELEGEN_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"run{run}-", dir=CACHE)
        start = time.process_time()
        go = GoFunctions.open_path(str(stripped))
        assert go is not None
        opened = time.process_time()
        for pc in pcs:
            go.lookup(pc)
        done = time.process_time()
        firsts.append((opened - start, done - opened))
        start = time.process_time()
        for pc in pcs:
            go.lookup(pc)
        warm = time.process_time() - start
        go.close()
        start = time.process_time()
        again = GoFunctions.open_path(str(stripped))      # the copy on disk, no search
        seconds.append(time.process_time() - start)
        assert again is not None
        again.close()
    rss_file = _status_kb("RssFile")
    tracemalloc.start()
    go = GoFunctions.open_path(str(stripped))
    assert go is not None
    for pc in pcs:
        go.lookup(pc)
    heap = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rss_file = _status_kb("RssFile") - rss_file
    row = {
        "binary": name, "Go": go.version + "+ layout", "functions": str(go.nfunc),
        "found by": go.tab.found_by,
        "first sight (first run)": f"{sum(firsts[0]) * 1e3:.0f} ms "
                                   f"(open {firsts[0][0] * 1e3:.0f} ms)",
        "first sight (median)": f"{statistics.median(sum(f) for f in firsts) * 1e3:.0f} ms",
        "open, second sight": f"{statistics.median(seconds) * 1e3:.1f} ms",
        "warm": f"{n / max(warm, 1e-9) / 1e3:.0f}k/s",
        "heap": f"{heap / 1e6:.1f} MB", "file RSS": f"{rss_file / 1024:.1f} MB",
    }
    if SYMBOLIZER is not None:
        sample = sample_pcs(original, n, seed=19)
        truth = dwarf_truth(original, sample)
        strict, _bad = agreement(go, truth, sample, strict=True)
        spelled, _bad = agreement(go, truth, sample)
        row["inlined pcs"] = str(sum(len(truth[pc]) > 1 for pc in sample))
        row["= DWARF (strict / runtime spelling)"] = f"{strict:.1%} / {spelled:.1%}"
    go.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pcs", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows = []
    global CACHE
    with tempfile.TemporaryDirectory(prefix="bench-gopclntab-") as tmp:
        out = Path(tmp)
        CACHE = tmp
        if Path(DOCKER).exists():
            rows.append(measure("docker (stripped copy)", Path(DOCKER),
                                strip_copy(DOCKER, out / "docker"), args.pcs, args.runs))
        for name, cgo in (("goservice", False), ("gostacks", True)):
            if not (TESTDATA / name).is_dir():
                continue
            src = out / name            # one snapshot of the sources for both builds
            shutil.copytree(TESTDATA / name, src)
            full = go_build(src, out / f"{name}-full", cgo=cgo)
            stripped = go_build(src, out / f"{name}-s-w", "-s", "-w", cgo=cgo)
            rows.append(measure(f"{name} (Go 1.19, -s -w)", full, stripped, args.pcs,
                                args.runs))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(r.get(k, "") for k in keys) + " |")


if __name__ == "__main__":
    main()
