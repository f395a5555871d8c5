"""First sight of a binary's CFI: the unwind table built by the former
pyelftools path and by the byte-level decoder, side by side, plus the warm
load from the disk cache.

Every build runs in a fresh process (``--one``), so its CPU time and its
peak RSS above the process's steady state (VmHWM after the build minus
VmRSS before it, modules already imported) belong to that build alone.
``child`` is the agent's real path: ``TableCache.lookup`` queues the file
and the builder child's worker builds it (nice 19, RLIMIT_CPU/AS); reported
are the agent's own CPU while it waits, the worker's CPU (``wait4``) and the
worker's peak RSS above the idle builder child.

    python -m bench.cfi_build [PATH ...]

Default binaries: libc, pyenv's libpython3.12 (DWARF, 30 MB), JDK 17's
libjvm.so, /usr/local/bin/docker (Go).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = {
    "libc.so.6": "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "libpython3.12.so (pyenv)": "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0",
    "libjvm.so (JDK 17)": "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so",
    "docker (Go)": "/usr/local/bin/docker",
}
HERE = Path(__file__).resolve().parent


def _status(field: str, pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def one(method: str, path: str) -> dict[str, float | int | str]:
    """One build in this (fresh) process."""
    from telegen.procinfo.maps import MappedFile, open_host_file
    from telegen.testing.pyelftools_cfi import pyelftools_table
    from telegen.unwind.build import build_table
    from telegen.unwind.cache import TableCache

    steady = _status("VmRSS")
    if method == "child":
        with tempfile.TemporaryDirectory() as tmp:
            tables = TableCache(cache_dir=tmp)
            tables.start_builder()
            while tables.builder_pid is None or not _child_idle(tables):
                time.sleep(0.05)
            child_rss = _status("VmRSS", tables.builder_pid or 0)
            file = MappedFile(open_host_file(path), path, "")
            t0, w0 = time.process_time(), time.monotonic()
            tables.lookup(file, "")
            tables.wait_ready(600)
            table = tables.lookup(file, "")
            agent_cpu, wall = time.process_time() - t0, time.monotonic() - w0
            rows = len(table) if table is not None else -1
            out: dict[str, float | int | str] = {
                "rows": rows, "cpu_s": tables.build_cpu_s, "agent_cpu_s": agent_cpu,
                "wall_s": wall, "peak_above_mb": tables.build_peak_rss / 2**20 - child_rss,
                "child_mb": child_rss, "where": "inline" if tables.built_inline else "child"}
            tables.close()
            return out
    build = pyelftools_table if method == "pyelftools" else build_table
    t0 = time.process_time()
    table = build(path)
    cpu = time.process_time() - t0
    return {"rows": len(table), "cpu_s": cpu, "peak_above_mb": _status("VmHWM") - steady,
            "source": table.source}


def _child_idle(tables: object) -> bool:
    pid = getattr(tables, "builder_pid", None)
    try:                      # the child has lowered itself once its imports are done
        return pid is not None and os.getpriority(os.PRIO_PROCESS, pid) == 19
    except OSError:
        return False


def warm(path: str) -> dict[str, float]:
    """A table stored on disk, loaded by a new TableCache (a new agent run):
    the content hash + mmap + header checks, and the mmap + checks alone."""
    from telegen.index.header import map_file
    from telegen.unwind.cache import TableCache
    from telegen.unwind.table import UnwindTable

    with tempfile.TemporaryDirectory() as tmp:
        TableCache(cache_dir=tmp).get(path, "")
        t0 = time.perf_counter()
        fresh = TableCache(cache_dir=tmp)
        table = fresh.get(path, "")
        with_hash = time.perf_counter() - t0
        assert fresh.loaded == 1 and fresh.built == 0
        f = next(Path(tmp).glob("*.unw"))
        t0 = time.perf_counter()
        again = UnwindTable.from_bytes(map_file(f))
        load = time.perf_counter() - t0
        rss0 = _status("VmRSS")
        for pc in range(0, len(again), 97):          # touch the rows: what becomes resident
            again.rule(again.starts[pc])
        return {"with_hash_ms": with_hash * 1e3, "load_ms": load * 1e3,
                "file_kb": f.stat().st_size / 1024, "rows": len(table),
                "resident_mb": _status("VmRSS") - rss0}


def run_one(method: str, path: str) -> dict[str, float | int | str]:
    out = subprocess.run([sys.executable, "-m", "bench.cfi_build", "--one", method, path],
                         capture_output=True, text=True, cwd=HERE.parent, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--warm", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--methods", default="pyelftools,decoder,child")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return 0
    if args.warm:
        print(json.dumps(warm(args.warm)))
        return 0
    binaries = {Path(p).name: p for p in args.paths} if args.paths else \
        {k: v for k, v in DEFAULT.items() if os.path.exists(v)}
    print("| binary | build | rows | CPU s | agent CPU s | peak RSS above steady (MB) |")
    print("|---|---|---:|---:|---:|---:|")
    for label, path in binaries.items():
        for method in args.methods.split(","):
            r = run_one(method, path)
            if r.get("where") == "inline":      # small CFI: built in the caller's thread
                method = "lookup (inline: small CFI)"
            agent = f"{r['agent_cpu_s']:.3f}" if "agent_cpu_s" in r else "(same)"
            extra = f" (+ idle child {r['child_mb']:.0f} MB)" if "child_mb" in r else ""
            print(f"| {label} | {method} | {r['rows']} | {r['cpu_s']:.3f} | {agent} | "
                  f"{r['peak_above_mb']:.1f}{extra} |", flush=True)
    print()
    print("| binary | table file (KiB) | warm load: hash + mmap (ms) | mmap + checks (ms) |")
    print("|---|---:|---:|---:|")
    for label, path in binaries.items():
        out = subprocess.run([sys.executable, "-m", "bench.cfi_build", "--warm", path],
                             capture_output=True, text=True, cwd=HERE.parent,
                             check=True).stdout
        w = json.loads(out.strip().splitlines()[-1])
        print(f"| {label} | {w['file_kb']:.0f} | {w['with_hash_ms']:.1f} | "
              f"{w['load_ms']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
