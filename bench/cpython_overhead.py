"""Cost of Python frames from eBPF (#22), beside bench.overhead.

CPU-bound CPython (one process per CPU, a pure-Python loop 30 frames deep,
pyenv 3.12 by default) is profiled by the ebpf receiver (those pids, cpu +
off_cpu, unwinding auto, 99 Hz; targeted, so that other work on the host
does not blur the difference) with ``interpreters: [python]`` and with
``interpreters: []`` (native only). Per run: the BPF programs' run time
(run_time_ns of the programs the agent holds; run-time stats held on by a
BPF_ENABLE_STATS descriptor for the whole bench, so another bench switching
kernel.bpf_stats_enabled off does not zero them) and the receiver's own CPU
(user+system of the process running it; its main thread only sleeps). The
difference, per second and per busy CPU, is the cost of the walker + naming +
merging in % of one core. Each interval runs from the end of one of the
receiver's windows (2 s) to the end of another: whole windows only, since a
window's work comes at its end. Per busy CPU: the workloads' CPU samples / rate
(on a shared host they get less than every CPU, and the agent's work follows
their samples). Also: RSS and the code objects cached per Python process.

Every receiver runs in its own child process (PYTHONPATH = its checkout,
its own bpf/ sources), and all of them at once — native and python, of each
checkout given (``--agents before=/path/to/old,after=.``) — on the same
workload processes: each measured interval starts in every child at the same
moment, so the load of a shared host (other work, the other receivers) is
the same for all and the differences are not the host's drift between runs.

    python -m bench.cpython_overhead [--seconds 20] [--python PATH] [--repeat 2]
                                     [--agents before=../old,after=.] [--cpu-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.startup import enable_stats

HERE = Path(__file__).resolve().parent
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

# One receiver, run by a child with its checkout's telegen (APIs every #22
# checkout has): "ready" once warm, then one JSON line per interval (each
# started by a line on stdin).
CHILD = r"""
import gc, json, logging, os, resource, sys, threading, time
from bench.overhead import bpf_run_time, rss_mb
from telegen.component import ComponentID, CreateSettings, Kind
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry, sum_series

args = json.loads(sys.argv[1])

class Discard:
    mutates_data = False
    def consume(self, profiles):
        pass

def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

gc_ns = [0, 0]                          # total in collections, start of the current one
def on_gc(phase, info):
    if phase == "start":
        gc_ns[1] = time.thread_time_ns()
    else:
        gc_ns[0] += time.thread_time_ns() - gc_ns[1]
gc.callbacks.append(on_gc)

def thread_cpu():                       # run time (ns, the scheduler's) per thread name
    names = {t.native_id: t.name.split("[")[0] for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0) + ns
    return out

registry = Registry()
settings = CreateSettings(ComponentID("ebpf", "bench"), Kind.RECEIVER,
                          registry.for_component("receiver", "ebpf/bench"),
                          logging.getLogger("bench.ebpf"))
cfg = EbpfConfig(sample_rate=args["rate"], duration=2.0, interpreters=args["interpreters"],
                 pids=args["pids"], off_cpu=args["off_cpu"])
cfg.validate()
receiver = EbpfReceiver(settings, cfg, Discard())
# intervals from one window's end to another's: whole windows only (a 20 s
# interval held 10 or 11 windows' work, +-10% of the receiver's CPU, by phase)
windows, ended, window = [0], threading.Condition(), receiver._window
def counted_window():
    window()
    with ended:
        windows[0] += 1
        ended.notify_all()
def after_windows(n):
    with ended:
        target = windows[0] + n
        ended.wait_for(lambda: windows[0] >= target, timeout=n * cfg.duration + 30)
receiver._window = counted_window
receiver.start(None)
try:
    time.sleep(args["warmup"])           # registration, unwind tables, first windows
    print("ready", flush=True)
    for _ in range(args["repeat"]):
        sys.stdin.readline()             # every receiver starts an interval at once
        after_windows(1)
        s0 = sum_series(registry.snapshot(), "receiver_accepted_samples", profile="cpu")
        c0, (b0, n0), t0 = cpu_s(), bpf_run_time(os.getpid()), time.monotonic()
        th0, g0 = thread_cpu(), gc_ns[0]
        after_windows(max(1, round(args["seconds"] / cfg.duration)))
        c1, (b1, n1), t1 = cpu_s(), bpf_run_time(os.getpid()), time.monotonic()
        th1, g1 = thread_cpu(), gc_ns[0]
        s1 = sum_series(registry.snapshot(), "receiver_accepted_samples", profile="cpu")
        python = getattr(receiver, "_python", None)
        code_bytes = [sum(len(c.table) + len(c.name) + len(c.file) for c in r._codes.values())
                      for r in getattr(python, "_readers", {}).values()]
        snap = registry.snapshot()
        print(json.dumps({
            "agent_cpu_s": (c1 - c0) / (t1 - t0), "bpf_s": (b1 - b0) / 1e9 / (t1 - t0),
            "bpf_runs": (n1 - n0) / (t1 - t0), "rss_mb": rss_mb(os.getpid()),
            "cpu_samples": (s1 - s0) / (t1 - t0),
            "threads": {**{n: (ns - th0.get(n, 0)) / 1e9 / (t1 - t0) for n, ns in th1.items()},
                        "(gc, any thread)": (g1 - g0) / 1e9 / (t1 - t0)},
            "code_bytes": max(code_bytes) if code_bytes else 0,
            "python_samples": sum_series(snap, "ebpf_python_samples"),
            "merged": sum_series(snap, "ebpf_python_samples", outcome="merged")
            + sum_series(snap, "ebpf_python_samples", outcome="partial")}), flush=True)
finally:
    receiver.shutdown()
"""


def start(tree: Path, interpreters: list[str], args: argparse.Namespace,
          pids: list[int]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    child = {"interpreters": interpreters, "seconds": args.seconds, "rate": args.rate,
             "pids": pids, "warmup": 4.0, "repeat": args.repeat, "off_cpu": not args.cpu_only}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(child)], cwd=tree, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def expect(child: subprocess.Popen[str], what: str) -> str:
    assert child.stdout is not None
    while True:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"a receiver child exited (rc {child.wait()}) before {what}")
        if what == "ready" and line.strip() == "ready" or what == "result" and line[:1] == "{":
            return line


def busy_cpus(r: dict[str, float], rate: int) -> float:
    """CPUs the workloads kept busy in an interval (their CPU samples / rate):
    on a shared host they get less than every CPU, and the agent's work
    follows their samples, so costs are per busy CPU, not per CPU present."""
    return max(r["cpu_samples"] / rate, 0.01)


def cost(r: dict[str, float], rate: int) -> float:
    """Agent CPU + BPF run time per busy CPU, in cores."""
    return (r["agent_cpu_s"] + r["bpf_s"]) / busy_cpus(r, rate)


def mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in runs) / len(runs) for k in runs[0] if k != "threads"}


def thread_costs(runs: list[dict[str, Any]], rate: int) -> dict[str, float]:
    """Mean CPU per busy CPU of each receiver thread, in % of one core."""
    out: dict[str, float] = {}
    for r in runs:
        for name, cpu in r.get("threads", {}).items():
            out[name] = out.get(name, 0.0) + 100 * cpu / busy_cpus(r, rate) / len(runs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=99)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--python", default="/root/.pyenv/versions/3.12.1/bin/python3")
    ap.add_argument("--agents", default=f"this={HERE.parent}")
    ap.add_argument("--cpu-only", action="store_true",
                    help="no off_cpu profile: the 99 Hz samples alone (on a loaded host the "
                         "busy processes' preemptions add off-CPU samples, each walked too)")
    args = ap.parse_args()
    agents = [(a.split("=", 1)[0], Path(a.split("=", 1)[1]).resolve())
              for a in args.agents.split(",")]
    ncpu = os.cpu_count() or 1
    workers = [subprocess.Popen([args.python, "-c", WORKLOAD]) for _ in range(ncpu)]
    stats_fd = enable_stats()
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    loads: list[float] = []
    children: dict[tuple[str, str], subprocess.Popen[str]] = {}
    try:
        for agent, tree in agents:
            for mode, interp in (("native", []), ("python", ["python"])):
                children[(agent, mode)] = start(tree, interp, args, [w.pid for w in workers])
        for child in children.values():
            expect(child, "ready")
        for _ in range(args.repeat):
            loads.append(os.getloadavg()[0])
            for child in children.values():
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            for name, child in children.items():
                rows.setdefault(name, []).append(json.loads(expect(child, "result")))
    finally:
        os.close(stats_fd)
        for child in children.values():
            if child.stdin is not None:
                child.stdin.close()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        for w in workers:
            w.kill()
            w.wait()
    print(f"CPython {Path(args.python).parent.parent.name}, {ncpu} CPU-bound processes, "
          f"{args.rate} Hz, {'cpu' if args.cpu_only else 'cpu + off_cpu'}, "
          f"{args.seconds:g}s x {args.repeat}, every receiver at once, "
          f"load average {min(loads):.1f}-{max(loads):.1f}")
    print("| agent | interpreters | busy CPUs | agent CPU %/busy CPU | BPF %/busy CPU | "
          "BPF µs/run | RSS MB | code cache KiB/process | Python samples merged |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (agent, mode), runs in rows.items():
        m = mean(runs)
        per_run = 1e6 * m["bpf_s"] / m["bpf_runs"] if m["bpf_runs"] else 0.0
        merged = f"{m['merged'] / m['python_samples']:.1%}" if m["python_samples"] else "-"
        busy = [busy_cpus(r, args.rate) for r in runs]
        agent_cpu = sum(100 * r["agent_cpu_s"] / b for r, b in zip(runs, busy, strict=True))
        bpf_cpu = sum(100 * r["bpf_s"] / b for r, b in zip(runs, busy, strict=True))
        print(f"| {agent} | {mode} | {sum(busy) / len(runs):.2f} | {agent_cpu / len(runs):.3f} "
              f"| {bpf_cpu / len(runs):.4f} | {per_run:.2f} | {m['rss_mb']:.0f} "
              f"| {m['code_bytes'] / 1024:.1f} | {merged} |")
    print()
    for agent, _ in agents:
        py, nat = rows[(agent, "python")], rows[(agent, "native")]
        each = [100 * (cost(p, args.rate) - cost(n, args.rate))
                for p, n in zip(py, nat, strict=True)]
        bpf = [100 * (p["bpf_s"] / busy_cpus(p, args.rate) - n["bpf_s"] / busy_cpus(n, args.rate))
               for p, n in zip(py, nat, strict=True)]
        nat_threads, py_threads = thread_costs(nat, args.rate), thread_costs(py, args.rate)
        by_thread = ", ".join(f"{n} {py_threads.get(n, 0) - nat_threads.get(n, 0):+.3f}"
                              for n in sorted(set(py_threads) | set(nat_threads)))
        print(f"{agent}: per thread, python - native, % per busy CPU: {by_thread}")
        print(f"{agent}: Python frames cost {sum(each) / len(each):.3f}% of one core per "
              f"profiled CPU above native-only (runs: {', '.join(f'{e:+.3f}' for e in each)}; "
              f"BPF part {sum(bpf) / len(bpf):+.3f}; target <= 0.2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
