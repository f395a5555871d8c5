"""Cost of Python frames from eBPF (#22), beside bench.overhead.

CPU-bound CPython (one process per CPU, a pure-Python loop 30 frames deep,
pyenv 3.12 by default) is profiled by the ebpf receiver (those pids, cpu +
off_cpu, unwinding auto, 99 Hz; targeted, so that other work on the host
does not blur the difference) with ``interpreters: [python]`` and with
``interpreters: []`` (native only), alternately, each for SECONDS. Per run:
the BPF programs' run time (kernel.bpf_stats_enabled, run_time_ns of the
programs this process holds) and the receiver's own CPU (this process's
user+system; the main thread only sleeps). The difference, per second and
per CPU, is the cost of the walker + naming + merging in % of one core.
Also: RSS and the user-space state kept per Python process.

    python -m bench.cpython_overhead [--seconds 20] [--python PATH] [--repeat 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.overhead import BPF_STATS, bpf_run_time, rss_mb
from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import Profiles
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry, sum_series

WORKLOAD = """
import sys
def deep(n):
    if n:
        return deep(n - 1)
    s = 0
    while True:
        for i in range(100000):
            s += i * i
deep(30)
"""


class Discard:
    mutates_data = False

    def consume(self, profiles: Profiles) -> None:
        pass


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(interpreters: list[str], seconds: float, rate: int, pids: list[int]) -> dict[str, float]:
    registry = Registry()
    settings = CreateSettings(ComponentID("ebpf", "bench"), Kind.RECEIVER,
                              registry.for_component("receiver", "ebpf/bench"),
                              logging.getLogger("bench.ebpf"))
    cfg = EbpfConfig(sample_rate=rate, duration=2.0, interpreters=interpreters, pids=pids)
    cfg.validate()
    receiver = EbpfReceiver(settings, cfg, Discard())
    receiver.start(None)  # type: ignore[arg-type]
    try:
        time.sleep(4.0)             # registration, unwind tables, first windows
        c0, (b0, n0), t0 = cpu_s(), bpf_run_time(os.getpid()), time.monotonic()
        time.sleep(seconds)
        c1, (b1, n1), t1 = cpu_s(), bpf_run_time(os.getpid()), time.monotonic()
        rss = rss_mb(os.getpid())
    finally:
        receiver.shutdown()
    snap = registry.snapshot()
    return {"agent_cpu_s": (c1 - c0) / (t1 - t0), "bpf_s": (b1 - b0) / 1e9 / (t1 - t0),
            "bpf_runs": (n1 - n0) / (t1 - t0), "rss_mb": rss,
            "python_samples": sum_series(snap, "ebpf_python_samples"),
            "merged": sum_series(snap, "ebpf_python_samples", outcome="merged")
            + sum_series(snap, "ebpf_python_samples", outcome="partial")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--python", default="/root/.pyenv/versions/3.12.1/bin/python3")
    args = ap.parse_args()
    ncpu = os.cpu_count() or 1
    workers = [subprocess.Popen([args.python, "-c", WORKLOAD]) for _ in range(ncpu)]
    stats_before = BPF_STATS.read_text().strip() if BPF_STATS.exists() else None
    rows: dict[str, list[dict[str, float]]] = {"python": [], "native": []}
    try:
        BPF_STATS.write_text("1")
        for _ in range(args.repeat):
            for name, interp in (("native", []), ("python", ["python"])):
                rows[name].append(run(interp, args.seconds, args.rate,
                                      [w.pid for w in workers]))
    finally:
        if stats_before is not None:
            BPF_STATS.write_text(stats_before)
        for w in workers:
            w.kill()
            w.wait()
    print(f"CPython {Path(args.python).parent.parent.name}, {ncpu} CPU-bound processes, "
          f"{args.rate} Hz, {args.seconds:g}s x {args.repeat}")
    print("| interpreters | agent CPU %/CPU | BPF %/CPU | BPF µs/run | RSS MB | "
          "Python samples merged |")
    print("|---|---|---|---|---|---|")
    mean: dict[str, dict[str, float]] = {}
    for name, runs in rows.items():
        m = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        mean[name] = m
        per_run = 1e6 * m["bpf_s"] / m["bpf_runs"] if m["bpf_runs"] else 0.0
        merged = f"{m['merged'] / m['python_samples']:.1%}" if m["python_samples"] else "-"
        print(f"| {name} | {100 * m['agent_cpu_s'] / ncpu:.3f} | {100 * m['bpf_s'] / ncpu:.4f} "
              f"| {per_run:.2f} | {m['rss_mb']:.0f} | {merged} |")
    extra = (mean["python"]["agent_cpu_s"] + mean["python"]["bpf_s"]
             - mean["native"]["agent_cpu_s"] - mean["native"]["bpf_s"]) / ncpu
    print(f"\nPython frames cost {100 * extra:.3f}% of one core per profiled CPU above "
          f"native-only (target <= 0.2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
