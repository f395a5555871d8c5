"""Overhead of memory profiling (uprobes on malloc/free), side by side in one run.

Two workloads (bench/workloads/bench_alloc.c, one thread): allocation-heavy
(malloc + free of 16 B..4 KiB in a tight loop) and moderate (~100k
allocations/s between units of computation). For every mode and sampling
rate one ebpf receiver (in this process) targets ``bench_alloc`` by name; a
copy of the binary named ``bench_ref`` is not targeted (its probes are
per-process, so it does not trap) and is the baseline. Targeted and
reference runs alternate (this VM's speed drifts by 10-20% between runs), and
the ratio of their summed throughput is reported, with the cost per
allocation call it implies and the share of calls sampled. The mutex row
(futex tracepoints, no uprobes) shows the allocation path is untouched by it.

    python -m bench.memory [--seconds 1.5] [--reps 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry
from telegen.testing.sink import Sink
from telegen.testing.workloads import build, parse_report

HERE = Path(__file__).resolve().parent
MODERATE_WORK = 8000          # crunch iterations per allocation: ~100k allocations/s here
START_DELAY_MS = 250          # the workload waits for the uprobes to attach


@dataclass
class Mode:
    label: str
    config: dict[str, object]


MODES = [
    Mode("alloc, 512 KiB (default)", {"memory": True, "memory_mode": "alloc"}),
    Mode("alloc, 64 KiB", {"memory": True, "memory_mode": "alloc",
                           "sample_every_bytes": 65536}),
    Mode("alloc, every allocation", {"memory": True, "memory_mode": "alloc",
                                     "sample_every_bytes": 0}),
    Mode("inuse, 512 KiB (default)", {"memory": True, "memory_mode": "inuse"}),
    Mode("inuse, every allocation", {"memory": True, "memory_mode": "inuse",
                                     "sample_every_bytes": 0}),
    Mode("mutex (futex tracepoints)", {"mutex": True}),
]


def run(binary: Path, work: int, seconds: float) -> float:
    out = subprocess.run([str(binary), str(work), str(seconds), str(START_DELAY_MS)],
                         capture_output=True, text=True, check=True).stdout
    return float(parse_report(out)["units_per_s"])


def start(config: dict[str, object]) -> tuple[EbpfReceiver, Registry]:
    registry = Registry()
    cfg = EbpfConfig(cpu=False, off_cpu=False, duration=2.0, process_names=["^bench_alloc$"],
                     **config)  # type: ignore[arg-type]
    cfg.validate()
    settings = CreateSettings(ComponentID("ebpf", "bench"), Kind.RECEIVER,
                              registry.for_component("receiver", "ebpf/bench"),
                              logging.getLogger("bench.memory"))
    receiver = EbpfReceiver(settings, cfg, Sink())
    receiver.start(None)  # type: ignore[arg-type]
    return receiver, registry


def metric(registry: Registry, name: str) -> float:
    return sum(v for k, v in registry.snapshot().items() if k.split("{")[0] == name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    works = (0, MODERATE_WORK)
    rows = []
    base_rate: dict[int, list[float]] = {w: [] for w in works}
    with tempfile.TemporaryDirectory() as tmp:
        binary = build("bench_alloc", tmp, source_dir=HERE / "workloads",
                       cflags=("-O2", "-g", "-fno-omit-frame-pointer"))
        ref = Path(tmp) / "bench_ref"
        shutil.copy(binary, ref)
        for mode in MODES:
            receiver, registry = start(mode.config)
            sums = {(w, kind): 0.0 for w in works for kind in ("ref", "probed")}
            try:
                for _ in range(args.reps):
                    for w in works:
                        r = run(ref, w, args.seconds)
                        base_rate[w].append(r)
                        sums[(w, "ref")] += r
                        sums[(w, "probed")] += run(binary, w, args.seconds)
            finally:
                receiver.shutdown()
            calls = metric(registry, "ebpf_memory_calls")
            sampled = metric(registry, "ebpf_memory_sampled")
            rows.append((mode.label, {w: sums[(w, "probed")] / sums[(w, "ref")] for w in works},
                         {w: sums[(w, "ref")] / args.reps for w in works}, calls, sampled))
    print(f"reference (untargeted) throughput: heavy {median(base_rate[0]) / 1e6:.1f} M "
          f"allocations/s, moderate {median(base_rate[MODERATE_WORK]) / 1e3:.0f} k "
          f"allocations/s; 1 thread, {args.reps} x {args.seconds:g} s alternating runs per "
          f"cell\n")
    print("| mode | heavy: throughput | heavy: cost per call | moderate: slowdown | "
          "sampled calls |")
    print("|---|---:|---:|---:|---:|")
    for label, ratio, ref_rate, calls, sampled in rows:
        per_call_ns = (1 / (ratio[0] * ref_rate[0]) - 1 / ref_rate[0]) * 1e9
        share = f"{100 * sampled / calls:.3f}%" if calls else "-"
        print(f"| {label} | {100 * ratio[0]:.1f}% of reference | {per_call_ns:,.0f} ns | "
              f"{100 * (1 - ratio[MODERATE_WORK]):.1f}% | {share} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
