"""Overhead of the ebpf receiver, measured side by side in one run.

For each sample rate (19, 49, 99 Hz; cpu + off_cpu, whole host) the
reference workload (bench/workloads/bench_work.c: one compute thread per
CPU plus a thread switching 1000x/s) runs once without the agent and once
with it. Reported: workload throughput relative to its baseline, the
agent's CPU (user+system from /proc/PID/stat while the workload runs), the
BPF programs' run time (kernel.bpf_stats_enabled, run_time_ns from the
agent's prog fdinfo), RSS, start-up time. Prints a markdown table.

    python -m bench.overhead [--seconds 15] [--rates 19,49,99]

CFI unwinding (``--unwinding``, default ``frame_pointer,auto``): each mode
is measured on its own build of the workload: ``frame_pointer`` on the
workload built with frame pointers (the kernel walks them), ``auto`` on the
workload built ``-fomit-frame-pointer`` (BPF copies user stacks, the agent
unwinds them with .eh_frame tables), in the same run. Each mode runs twice:
on the steady workload (its threads sit in the same few stacks, so most
samples reuse an earlier copy: BPF's dedupe) and on the same source built
``-DVARIED_STACKS`` (depth and stack contents change on every iteration, so
nearly every sample is copied to user space and unwound: the worst case).
Each CFI row says how many copies were made and deduped, and which share of
the workload's samples were unwound up to the end of the stack.

Unwind tables are measured in their steady state: before the measured CFI
runs, a warm-up agent (same mode, same workload binary, whole host, not
measured) sees every binary once, so the measured agent loads the tables
from the disk cache (/var/cache/telegen/unwind as root, by build-id or file identity)
instead of building them. That is what an always-on agent does: a table is
built once per binary per host, then loaded in about a millisecond. Building
is reported on its own line ("first sight of ...": pyelftools time to build
the table of libc and of the workload binary, once per binary).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from telegen.telemetry import sum_series
from telegen.testing.workloads import build, parse_report

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


FP_CFLAGS = ("-O2", "-g", "-fno-omit-frame-pointer", "-pthread")
NOFP_CFLAGS = ("-O2", "-g", "-fomit-frame-pointer", "-pthread")


@dataclass
class Result:
    rate: int
    unwinding: str
    baseline: float
    with_agent: float
    agent_cpu_s: float
    bpf_s: float
    bpf_runs: int
    seconds: float
    rss_mb: float
    startup_s: float
    ready_s: float
    workload: str = "fp"
    telemetry: dict[str, float] | None = None

    def counter(self, name: str, **labels: str) -> float:
        return sum_series(self.telemetry or {}, name, **labels)

    def cfi_note(self) -> str:
        if self.unwinding == "frame_pointer" or not self.telemetry:
            return "—"
        emitted = self.counter("ebpf_unwind_copies", result="emitted")
        deduped = self.counter("ebpf_unwind_copies", result="deduped")
        full = self.counter("ebpf_unwind_full", process="bench_work")
        total = full + self.counter("ebpf_unwind_truncated", process="bench_work") + \
            self.counter("ebpf_unwind_errors", process="bench_work")
        share = f"{100 * full / total:.1f}%" if total else "n/a"
        dedupe = f"{100 * deduped / (emitted + deduped):.0f}%" if emitted + deduped else "n/a"
        dropped = self.counter("unwind_go_dedupe_keys_dropped")
        note = f"; {dropped:.0f} Go keys dropped" if dropped else ""
        return f"{emitted:.0f} copies, {dedupe} deduped{note}; {share} of {total:.0f} whole"


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK     # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bpf_run_time(pid: int) -> tuple[int, int]:
    """Sum of run_time_ns / run_cnt over the BPF programs the agent holds."""
    ns = cnt = 0
    fd_dir = Path(f"/proc/{pid}/fdinfo")
    for fd in fd_dir.iterdir():
        try:
            text = fd.read_text()
        except OSError:
            continue
        if "prog_type:" not in text:
            continue
        for line in text.splitlines():
            if line.startswith("run_time_ns:"):
                ns += int(line.split()[1])
            elif line.startswith("run_cnt:"):
                cnt += int(line.split()[1])
    return ns, cnt


def run_workload(binary: Path, seconds: float, threads: int) -> float:
    out = subprocess.run([str(binary), str(seconds), str(threads)], capture_output=True,
                         text=True, check=True).stdout
    return float(parse_report(out)["iters_per_s"])


ONLY_WORKLOAD = False       # --only-workload: bench.agent --process-names <the binary>


def agent_args(binary: Path) -> list[str]:
    """The agent's command; with --only-workload it profiles this binary only
    (by its path: another bench_work on the host is not ours)."""
    only = ["--process-names", f"^{re.escape(str(binary))}$"] if ONLY_WORKLOAD else []
    return [sys.executable, "-m", "bench.agent", *only]


def warm_up(binary: Path, rate: int, threads: int, unwinding: str,
            seconds: float = 4.0) -> None:
    """Run the agent (not measured) while the workload runs, so that every
    binary on the host gets its unwind table built and cached on disk."""
    agent = subprocess.Popen([*agent_args(binary), "--rate", str(rate),
                              "--duration", "1", "--unwinding", unwinding],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=HERE.parent)
    assert agent.stdout is not None and agent.stdin is not None
    agent.stdout.readline()
    run_workload(binary, seconds, threads)
    time.sleep(1.0)         # the unwinder thread finishes the last copies
    agent.stdin.close()
    agent.wait(60)


def first_sight(binaries: dict[str, Path]) -> Iterator[str]:
    """Time to build each file's unwind table from its ELF (no cache)."""
    from telegen.unwind.build import build_table

    for name, path in binaries.items():
        t0 = time.process_time()
        table = build_table(str(path))
        ms = 1000 * (time.process_time() - t0)
        yield f"first sight of {name}: {ms:.0f} ms of CPU once ({len(table)} rows)"


def libc_path(binary: Path) -> Path:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "libc.so" in line and "=>" in line:
            return Path(line.split("=>")[1].split()[0])
    return Path("/lib/x86_64-linux-gnu/libc.so.6")


def measure(binary: Path, rate: int, seconds: float, threads: int,
            window_s: float, unwinding: str = "frame_pointer", workload: str = "fp") -> Result:
    baseline = run_workload(binary, seconds, threads)
    t0 = time.monotonic()
    agent = subprocess.Popen([*agent_args(binary), "--rate", str(rate),
                              "--duration", str(window_s), "--unwinding", unwinding],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=HERE.parent)
    assert agent.stdout is not None and agent.stdin is not None
    line = agent.stdout.readline().split()
    if not line or line[0] != "ready":
        agent.kill()
        raise RuntimeError(f"agent did not start: {line}")
    ready_s = time.monotonic() - t0
    time.sleep(1.0)   # let the first events (process metadata capture) settle
    cpu0, (bpf0, runs0) = proc_cpu_s(agent.pid), bpf_run_time(agent.pid)
    w0 = time.monotonic()
    with_agent = run_workload(binary, seconds, threads)
    elapsed = time.monotonic() - w0
    cpu1, (bpf1, runs1) = proc_cpu_s(agent.pid), bpf_run_time(agent.pid)
    rss = rss_mb(agent.pid)
    agent.stdin.close()
    telemetry = None
    for out in agent.stdout:
        if out.startswith("telemetry "):
            telemetry = json.loads(out.split(" ", 1)[1])
    agent.wait(60)
    return Result(rate, unwinding, baseline, with_agent, cpu1 - cpu0, (bpf1 - bpf0) / 1e9,
                  runs1 - runs0, elapsed, rss, float(line[1]), ready_s, workload, telemetry)


_WORKLOADS = {"fp": FP_CFLAGS, "fp_varied": (*FP_CFLAGS, "-DVARIED_STACKS"),
              "nofp": NOFP_CFLAGS, "nofp_varied": (*NOFP_CFLAGS, "-DVARIED_STACKS")}
_WORKLOAD_LABEL = {"fp": "-fno-omit-frame-pointer",
                   "fp_varied": "-fno-omit-frame-pointer, varied stacks",
                   "nofp": "-fomit-frame-pointer",
                   "nofp_varied": "-fomit-frame-pointer, varied stacks",
                   "go": "Go, -ldflags=-s -w"}
_MODE_LABEL = {"frame_pointer": "frame_pointer", "auto": "auto: CFI", "dwarf": "dwarf: CFI"}


def workloads_for(mode: str, go: bool = False) -> tuple[str, ...]:
    c = ("fp", "fp_varied") if mode == "frame_pointer" else ("nofp", "nofp_varied")
    return (*c, "go") if go else c


def build_go(out_dir: Path) -> Path:
    """bench_work.go, stripped as images ship it (no .symtab, DWARF, .eh_frame)."""
    out = out_dir / "bench_work"
    subprocess.run(["go", "build", "-ldflags=-s -w", "-o", str(out),
                    str(HERE / "workloads" / "bench_work.go")], check=True,
                   env=dict(os.environ, GOCACHE=str(out_dir / "gocache"), GOFLAGS="-mod=mod"))
    return out


def table(results: list[Result], ncpu: int) -> str:
    rows = ["| rate | unwinding (workload build) | workload throughput | "
            "agent CPU (user+sys) | BPF run time | total per profiled CPU | agent RSS | "
            "start-up (load / process ready) | CFI copies; samples unwound whole |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        agent_pct = 100 * r.agent_cpu_s / r.seconds
        bpf_pct = 100 * r.bpf_s / r.seconds
        per_cpu = (agent_pct + bpf_pct) / ncpu
        rows.append(
            f"| {r.rate} Hz | {_MODE_LABEL.get(r.unwinding, r.unwinding)} "
            f"({_WORKLOAD_LABEL[r.workload]}) | "
            f"{100 * r.with_agent / r.baseline:.1f}% of baseline | "
            f"{agent_pct:.2f}% of a core | {bpf_pct:.2f}% of a core "
            f"({r.bpf_runs / r.seconds:.0f} runs/s) | {per_cpu:.2f}% | {r.rss_mb:.0f} MB | "
            f"{r.startup_s:.1f} s / {r.ready_s:.1f} s | {r.cfi_note()} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rates", default="19,49,99")
    ap.add_argument("--window", type=float, default=5.0, help="receiver duration (s)")
    ap.add_argument("--unwinding", default="frame_pointer,auto",
                    help="modes to measure, each on its matching workload build")
    ap.add_argument("--go", action="store_true",
                    help="also measure the Go twin of the workload (stripped) in every mode")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure every row this many times, interleaved")
    ap.add_argument("--only-workload", action="store_true",
                    help="profile the workload's processes only (process_names), not the "
                         "whole host: on a shared machine, the agent's cost for the workload")
    args = ap.parse_args()
    if args.only_workload:
        global ONLY_WORKLOAD
        ONLY_WORKLOAD = True
    ncpu = os.cpu_count() or 1
    stats_before = BPF_STATS.read_text().strip() if BPF_STATS.exists() else None
    try:
        if stats_before is not None:
            BPF_STATS.write_text("1")
        with tempfile.TemporaryDirectory() as tmp:
            binaries = {}
            for label, cflags in _WORKLOADS.items():
                (Path(tmp) / label).mkdir()
                binaries[label] = build("bench_work", Path(tmp) / label, cflags=cflags,
                                        source_dir=HERE / "workloads")
            if args.go:
                (Path(tmp) / "go").mkdir()
                binaries["go"] = build_go(Path(tmp) / "go")
            modes = args.unwinding.split(",")
            for mode in modes:
                if mode != "frame_pointer":
                    for workload in workloads_for(mode, args.go):
                        warm_up(binaries[workload], int(args.rates.split(",")[-1]), ncpu,
                                mode)
            results = [measure(binaries[workload], int(rate), args.seconds, ncpu,
                               args.window, mode, workload)
                       for _ in range(args.repeat)
                       for rate in args.rates.split(",")
                       for mode in modes
                       for workload in workloads_for(mode, args.go)]
            sights = list(first_sight({"libc": libc_path(binaries["nofp"]),
                                       "the workload binary": binaries["nofp"]})) \
                if modes != ["frame_pointer"] else []
    finally:
        if stats_before is not None:
            BPF_STATS.write_text(stats_before)
    scope = "the workload's processes only" if args.only_workload else "whole host"
    print(f"{ncpu} CPUs, {args.seconds:g} s per run, cpu + off_cpu, {scope}, "
          f"{args.window:g} s windows; workload: {ncpu} compute threads + 1000 "
          f"sleeps/s\n")
    print(table(results, ncpu))
    for line in sights:
        print(f"\n{line}", end="")
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
