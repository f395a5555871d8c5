"""``telegen`` with a memory probe: what the agent keeps, written every few seconds.

Runs ``telegen.cli.main(ARGS)`` (e.g. ``run``) in this process, and a daemon
thread appends one JSON line to ``--out`` every ``--every`` seconds:

- ``rss_mb`` (statm), ``smaps_mb`` (resident MB per kind of mapping: heap,
  anonymous, BPF rings, unwind tables, symbol indexes, libraries) and
  ``malloc_mb`` (glibc's arenas: in use, free, mmapped), ``pymalloc``
  (Python's arenas, bytes in use and free inside them) and, with
  ``--tracemalloc``, the bytes Python allocated (``traced_mb``) and the 25
  source lines that grew most since the first record (``grown``:
  ``file:line`` → bytes);
- ``containers``: for every live object of a ``telegen`` class, the length of
  each container attribute (dict, set, list, deque, cachetools caches),
  summed per ``Class.attribute`` — the per-process and per-binary caches
  (ProcessCache, symbolizer LRUs, unwind TableCache, perf maps, window dicts)
  and the telemetry registry's series, without naming them in advance;
  ``container_mb``: their bytes, estimated from 32 items each (4 levels deep,
  objects shared with other structures counted in each); ``telemetry``:
  series per metric name and windows emitted;
- ``types``: the 25 most numerous object types.

Used by ``bench.fresh_host --probe`` to find what grows under process churn (#21).
A diagnostic, not a measure of the agent: walking ``gc.get_objects()`` from a
thread costs CPU and can expose a tuple another thread is still building
(CPython then raises ``SystemError: Objects/tupleobject.c: bad argument to
internal function`` there — seen in the agent's window thread only under the
probe).

    python -m bench.agent_probe --out probe.jsonl [--every 30] [--tracemalloc] -- run
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
CONTAINERS = (dict, set, frozenset, list, collections.deque, collections.OrderedDict)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def _kind(name: str) -> str:
    """What a mapping of the agent holds, by its smaps name."""
    if name.endswith(".unw"):
        return "unwind tables"
    if name.endswith(".symc"):
        return "symbol indexes"
    if name.startswith("anon_inode:bpf"):
        return "bpf maps (rings)"
    if name in ("[heap]", "[anon]", "[stack]"):
        return name
    if "/.venv/" in name or "/site-packages/" in name:
        return "python packages (.so)"
    return "other files" if name.startswith("/") else name


def smaps_mb() -> dict[str, float]:
    """Resident MB of the agent's mappings by kind (:func:`_kind`)."""
    kb: dict[str, int] = collections.Counter()
    name = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                name = _kind(head[5] if len(head) > 5 else "[anon]")
            elif head[0] == "Rss:":
                kb[name] += int(head[1])
    return {k: round(v / 1e3, 1) for k, v in sorted(kb.items(), key=lambda kv: -kv[1])}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def malloc_mb() -> dict[str, float]:
    """glibc's view of the C heap (``mallinfo2``): bytes in the arenas, in use
    there, free there, and in mmapped chunks. Empty where it is not glibc."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {"arenas": info.arena / 1e6, "in_use": info.uordblks / 1e6,
            "free": info.fordblks / 1e6, "mmapped": info.hblkhd / 1e6}


def _module(cls: type) -> str:
    module = cls.__dict__.get("__module__", "")
    return module if isinstance(module, str) else ""


def _length(value: Any) -> int | None:
    if isinstance(value, CONTAINERS):
        return len(value)
    if _module(type(value)).startswith("cachetools"):
        return len(value)
    return None


def deep_bytes(obj: Any, depth: int = 4, seen: set[int] | None = None) -> int:
    """Bytes of ``obj`` and what it holds, ``depth`` levels down (each object once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj, 64)
    if depth <= 0:
        return size
    if isinstance(obj, dict):
        items: Any = [x for kv in obj.items() for x in kv]
    elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        items = obj
    elif _module(type(obj)).startswith("cachetools"):
        items = [x for kv in obj.items() for x in kv]
    else:
        items = list((getattr(obj, "__dict__", None) or {}).values())
        items += [getattr(obj, a) for a in getattr(type(obj), "__slots__", ()) if hasattr(obj, a)]
    return size + sum(deep_bytes(x, depth - 1, seen) for x in items)


def _estimate(value: Any, n: int) -> int:
    """Bytes of a container of ``n`` items, from up to 32 of them."""
    if isinstance(value, dict) or _module(type(value)).startswith("cachetools"):
        sample: list[Any] = list(value.items())[-32:]
    else:
        sample = list(value)[-32:]
    if not sample:
        return sys.getsizeof(value, 64)
    per = sum(deep_bytes(x) for x in sample) / len(sample)
    return int(per * n + sys.getsizeof(value, 64))


def pymalloc_mb() -> dict[str, float]:
    """Python's small-object allocator (``sys._debugmallocstats``, written to
    fd 2: redirected for the call): arenas (1 MiB each on 3.10+), bytes in
    live blocks, and free in their pools and arenas — the fragmentation."""
    stats: dict[str, float] = {}
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    names = {"# arenas allocated current": "arenas", "# bytes in allocated blocks": "in_use_mb",
             "# bytes in available blocks": "free_in_pools_mb"}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = names.get(key.strip())
        if name:
            number = int(value.strip().replace(",", ""))
            stats[name] = number if name == "arenas" else round(number / 1e6, 1)
    return stats


def container_sizes() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """``Class.attribute`` → summed length and estimated bytes; type name →
    count of objects."""
    sizes: dict[str, int] = collections.Counter()
    nbytes: dict[str, int] = collections.Counter()
    types: dict[str, int] = collections.Counter()
    for obj in gc.get_objects():
        cls = type(obj)
        types[cls.__name__] += 1
        if not _module(cls).startswith("telegen"):
            continue
        attrs: dict[str, Any] = dict(getattr(obj, "__dict__", {}) or {})
        for slot in getattr(cls, "__slots__", ()):
            if hasattr(obj, slot):
                attrs[slot] = getattr(obj, slot)
        for name, value in attrs.items():
            n = _length(value)
            if n is not None:
                sizes[f"{cls.__qualname__}.{name}"] += n
                for _ in range(3):          # other threads change it as we read it
                    try:
                        if n >= 100:
                            nbytes[f"{cls.__qualname__}.{name}"] += _estimate(value, n)
                        break
                    except (RuntimeError, KeyError):
                        continue
        n = _length(obj)
        if n is not None and isinstance(obj, CONTAINERS):
            sizes[f"{cls.__qualname__}"] += n
    return dict(sizes), dict(nbytes), dict(types)


def registry_facts() -> dict[str, Any]:
    """Series per metric name and the window counter of every telemetry Registry."""
    out: dict[str, Any] = {}
    for obj in gc.get_objects():
        if type(obj).__name__ == "Registry" and _module(type(obj)) == "telegen.telemetry":
            snap = obj.snapshot()
            names = collections.Counter(k.split("{")[0] for k in snap)
            out["series"] = dict(names.most_common(10))
            out["windows"] = sum(v for k, v in snap.items() if k.startswith("ebpf_windows"))
    return out


def probe(out: str, every: float, traced: bool) -> None:
    started = time.monotonic()
    first: tracemalloc.Snapshot | None = None
    while True:
        time.sleep(every)
        record: dict[str, Any] = {"t": round(time.monotonic() - started, 1), "rss_mb": rss_mb(),
                                  "smaps_mb": smaps_mb(), "malloc_mb": malloc_mb(),
                                  "pymalloc": pymalloc_mb(),
                                  "threads": threading.active_count()}
        try:
            sizes, nbytes, types = container_sizes()
            record["telemetry"] = registry_facts()
        except Exception as exc:          # objects change under us: try again next time
            record["error"] = repr(exc)
            sizes, nbytes, types = {}, {}, {}
        record["containers"] = {k: v for k, v in sorted(sizes.items()) if v}
        record["container_mb"] = {k: round(v / 1e6, 2) for k, v in
                                  sorted(nbytes.items(), key=lambda kv: -kv[1]) if v > 100_000}
        record["types"] = dict(sorted(types.items(), key=lambda kv: -kv[1])[:25])
        if traced:
            snap = tracemalloc.take_snapshot()
            record["traced_mb"] = tracemalloc.get_traced_memory()[0] / 1e6
            if first is None:
                first = snap
            stats = snap.compare_to(first, "lineno")[:25]
            record["grown"] = {f"{s.traceback[0].filename}:{s.traceback[0].lineno}":
                               s.size_diff for s in stats}
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=float, default=30.0)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args()
    argv = [a for a in ns.args if a != "--"] or ["run"]
    if ns.tracemalloc:
        tracemalloc.start(1)
    threading.Thread(target=probe, args=(ns.out, ns.every, ns.tracemalloc), daemon=True,
                     name="agent-probe").start()
    from telegen.cli import main as telegen_main
    return telegen_main(argv)


if __name__ == "__main__":
    sys.exit(main())
