"""``telegen`` with a memory probe: what the agent keeps, written every few seconds.

Runs ``telegen.cli.main(ARGS)`` (e.g. ``run``) in this process, and a daemon
thread appends one JSON line to ``--out`` every ``--every`` seconds:

- ``rss_mb`` (statm) and, with ``--tracemalloc``, the bytes Python allocated
  (``traced_mb``) and the 25 source lines that grew most since the first
  record (``grown``: ``file:line`` → bytes);
- ``containers``: for every live object of a ``telegen`` class, the length of
  each container attribute (dict, set, list, deque, cachetools caches),
  summed per ``Class.attribute`` — the per-process and per-binary caches
  (ProcessCache, symbolizer LRUs, unwind TableCache, perf maps, window dicts)
  and the telemetry registry's series, without naming them in advance;
- ``types``: the 25 most numerous object types.

Used by ``bench.fresh_host --probe`` to find what grows under process churn (#21).

    python -m bench.agent_probe --out probe.jsonl [--every 30] [--tracemalloc] -- run
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
CONTAINERS = (dict, set, frozenset, list, collections.deque, collections.OrderedDict)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def _module(cls: type) -> str:
    module = cls.__dict__.get("__module__", "")
    return module if isinstance(module, str) else ""


def _length(value: Any) -> int | None:
    if isinstance(value, CONTAINERS):
        return len(value)
    if _module(type(value)).startswith("cachetools"):
        return len(value)
    return None


def container_sizes() -> tuple[dict[str, int], dict[str, int]]:
    """``Class.attribute`` → summed length; type name → count of objects."""
    sizes: dict[str, int] = collections.Counter()
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
        n = _length(obj)
        if n is not None and isinstance(obj, CONTAINERS):
            sizes[f"{cls.__qualname__}"] += n
    return dict(sizes), dict(types)


def probe(out: str, every: float, traced: bool) -> None:
    started = time.monotonic()
    first: tracemalloc.Snapshot | None = None
    while True:
        time.sleep(every)
        record: dict[str, Any] = {"t": round(time.monotonic() - started, 1), "rss_mb": rss_mb()}
        try:
            sizes, types = container_sizes()
        except Exception as exc:          # objects change under us: try again next time
            record["error"] = repr(exc)
            sizes, types = {}, {}
        record["containers"] = {k: v for k, v in sorted(sizes.items()) if v}
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
