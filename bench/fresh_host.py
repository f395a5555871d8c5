"""The agent on a host that keeps meeting new binaries (#21), side by side.

For each agent checkout given (``--agents today=/path/to/old,new=.``), in one
run, with an EMPTY cache directory each (``TELEGEN_CACHE_DIR``):

1. a pyenv CPython 3.12 (its libpython carries 13.7 MB of DWARF) runs a busy
   Python service (pure-Python loop, json, hashlib) from before the agent;
2. ``python -m telegen run`` starts on its embedded default (whole host, cpu
   + off_cpu at 99 Hz, symbolized, pprof files in a temporary directory);
3. ``--delay`` seconds later (20) a CPU-bound C program (bench_work.c, one
   thread per CPU) starts for ``--seconds``; optionally (``--churn``) a short ``sh``
   starts every 200 ms the whole time.

Reported per agent: the agent's CPU (its process tree: user+system of the
agent and of its children, reaped or alive) as % of one core over the C
program's run; the program's throughput relative to a run without any agent
(measured first, same run); the tree's RSS (each process's own: a ``vfork``
child before its exec is its parent's memory, a fork's copy-on-write pages are
its parent's; :func:`resident_kb`) at 5 s, 20 s, 50 s, 300 s, 600 s and the end,
its peak, and its growth over the last half (mean of its last 30 s over mean
of its first 30 s); whether libLLVM/libbcc are
mapped in the agent at the end; seconds from start to the first sample
(``ready`` in its log). Prints a markdown table, then each process of the
tree (agent, CFI builder and its workers, symbol-index children, bpfc…) at
those marks and at the peak: resident anonymous / file / shmem MB.

    python -m bench.fresh_host [--agents today=../old,new=.] [--seconds 60] [--churn]
        [--process-names REGEX ...]
        [--no-baseline] [--timeline PATH] [--probe PATH [--tracemalloc]]

``--probe`` runs each agent under :mod:`bench.agent_probe` (what it keeps,
every ``--probe-every`` seconds), to find what grows.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from telegen.testing.pyprog import pyenv_python
from telegen.testing.workloads import build, parse_report

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MARKS = (5, 20, 50, 300, 600)

PY_SERVICE = r'''
import hashlib, json, time
def handle(i):
    doc = {"id": i, "items": [{"sku": f"s{j}", "qty": j} for j in range(50)]}
    text = json.dumps(doc)
    return hashlib.sha256(text.encode()).hexdigest(), sum(len(k) for k in json.loads(text))
while True:
    for i in range(200):
        handle(i)
    time.sleep(0.01)
'''


# The embedded default's pipeline (agent::profiling translated), with the ebpf
# receiver limited to the workload's processes (--process-names)
TARGETED_CONFIG = """
receivers:
  ebpf/agent:
    process_names: {names}
processors:
  symbolize/agent: {{}}
  batch/agent: {{}}
exporters:
  pprof_file/agent:
    directory: ./profiles
  console/agent: {{}}
service:
  pipelines:
    profiles/agent:
      receivers: [ebpf/agent]
      processors: [symbolize/agent, batch/agent]
      exporters: [pprof_file/agent, console/agent]
"""


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    return [p for p, _parent in tree_parents(pid)]


def tree_parents(pid: int) -> list[tuple[int, int]]:
    """(pid, its parent) for ``pid`` (parent 0) and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [(pid, 0)]
    while todo:
        p, parent = todo.pop()
        out.append((p, parent))
        todo.extend((c, p) for c in children.get(p, []))
    return out


def cpu_s(pids: list[int]) -> float:
    """user+system seconds of ``pids``, with their reaped children's."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


_kcmp = ctypes.CDLL(None, use_errno=True).syscall
SYS_KCMP, KCMP_VM = 312, 1     # x86-64


def _same_memory(a: int, b: int) -> bool:
    """Whether ``a`` and ``b`` share one address space (a ``vfork`` child
    before its ``exec``): kcmp(2)."""
    return _kcmp(SYS_KCMP, a, b, KCMP_VM, 0, 0) == 0


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def resident_kb(pid: int, parent: int) -> int:
    """Resident kB of ``pid`` that is its own: 0 for a ``vfork`` child not yet
    exec'd (its parent's address space: Python's subprocess spawns so), the
    private pages of a fork that did not exec (the CFI builder's workers share
    their parent's pages copy-on-write), else its RSS. Counting every
    process's RSS counted the agent twice whenever a sample fell into a spawn."""
    try:
        if parent and _same_memory(pid, parent):
            return 0
        if parent and _cmdline(pid) == _cmdline(parent):
            private = 0
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        private += int(line.split()[1])
            return private
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except (OSError, ValueError, IndexError):
        return 0


def rss_mb(members: list[tuple[int, int]]) -> float:
    """The tree's resident MB (:func:`resident_kb` of each (pid, parent))."""
    return sum(resident_kb(p, parent) for p, parent in members) / 1e3


def _status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                    out[line.split(":")[0][3:].lower()] = int(line.split()[1])
    except OSError:
        pass
    return out


def role(pid: int, agent: int) -> str:
    """What a process of the agent's tree is: agent, cfi-builder (and its
    workers), symbol-index, bpfc, or its command's name."""
    if pid == agent:
        return "agent"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    for needle, name in (("unwind.builder", "cfi-builder"), ("symcache_child", "symbol-index"),
                         ("telegen.bpfc", "bpfc")):
        if needle in cmd:
            return name
    return cmd.split(" ", 1)[0].rsplit("/", 1)[-1][:20] or "?"


def breakdown(agent: int) -> list[dict[str, object]]:
    """Per process of the agent's tree: role, pid, anonymous / file / shmem
    resident MB (``/proc/PID/status``: RssShmem holds the BPF ring buffers'
    mappings)."""
    rows: list[dict[str, object]] = []
    for p, parent in tree_parents(agent):
        kb = _status_kb(p)
        if parent and _same_memory(p, parent):
            continue                    # a vfork child: its parent's memory
        if kb:
            rows.append({"role": role(p, agent), "pid": p,
                         **{k: round(v / 1e3, 1) for k, v in kb.items()}})
    return rows


def llvm_mapped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            text = f.read()
    except OSError:
        return False
    return "libLLVM" in text or "libbcc" in text


def run_program(work: Path, seconds: float, threads: int) -> float:
    out = subprocess.run([str(work), str(seconds), str(threads)], capture_output=True, text=True,
                         check=True).stdout
    return parse_report(out)["iters_per_s"]


def churn(stop: threading.Event) -> None:
    while not stop.is_set():
        subprocess.run(["sh", "-c", "true"], check=False)
        stop.wait(0.2)


def measure(label: str, src: Path, work: Path, args: argparse.Namespace,
            baseline: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, TELEGEN_CACHE_DIR=cache, PYTHONPATH=str(src))
        log = Path(out) / "agent.log"
        started = time.monotonic()
        with open(log, "wb") as logf:
            command = ["-m", "telegen", "run"]
            if args.process_names:       # the default pipeline, limited to the workloads
                config = Path(out) / "targeted.yaml"
                config.write_text(TARGETED_CONFIG.format(names=json.dumps(args.process_names)))
                command += ["-c", str(config)]
            if args.probe:    # the same agent, with bench.agent_probe's records of what it keeps
                command = ["-m", "bench.agent_probe", "--out", f"{args.probe}.{label}.jsonl",
                           "--every", str(args.probe_every)] + \
                    (["--tracemalloc"] if args.tracemalloc else []) + ["--"] + command[2:]
            agent = subprocess.Popen([sys.executable, *command], cwd=out, env=env,
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        stop = threading.Event()
        churner = threading.Thread(target=churn, args=(stop,), daemon=True)
        if args.churn:
            churner.start()
        rss: dict[str, float] = {}
        samples: list[tuple[float, float]] = []
        parts: dict[str, list[dict[str, object]]] = {}   # mark -> per-process breakdown
        peak_parts: list[dict[str, object]] = []

        def watch() -> None:
            marks = [m for m in MARKS] + [float("inf")]
            peak = 0.0
            while not stop.is_set():
                t = time.monotonic() - started
                total = rss_mb(tree_parents(agent.pid))
                samples.append((t, total))
                if t >= marks[0]:
                    parts[f"{marks.pop(0)}s"] = breakdown(agent.pid)
                if total > peak:
                    peak = total
                    peak_parts[:] = [{"t": round(t)}, *breakdown(agent.pid)]
                stop.wait(1.0)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            time.sleep(args.delay)
            cpu0 = cpu_s(tree(agent.pid))
            t0 = time.monotonic()
            throughput = run_program(work, args.seconds, args.threads)
            cpu1 = cpu_s(tree(agent.pid))
            t1 = time.monotonic()
            mapped = llvm_mapped(agent.pid)
            parts["end"] = breakdown(agent.pid)
        finally:
            stop.set()
            os.killpg(agent.pid, signal.SIGTERM)
        try:
            agent.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        for mark in MARKS:
            near = [r for t, r in samples if t >= mark]
            rss[f"{mark}s"] = near[0] if near else 0.0
        # growth over the last half: mean of its last 30 s over mean of its first 30 s
        # (single readings jump with a window's garbage)
        end = samples[-1][0] if samples else 0.0
        head = [r for t, r in samples if end / 2 <= t < end / 2 + 30] or [0.0]
        tail = [r for t, r in samples if t >= end - 30] or [0.0]
        head_mb, tail_mb = sum(head) / len(head), sum(tail) / len(tail)
        if args.timeline:
            Path(args.timeline).with_suffix(f".{label}.json").write_text(json.dumps(
                {"agent": label, "samples": samples}))
        text = log.read_text(errors="replace")
        ready = next((line for line in text.splitlines() if "first sample" in line
                      or "started" in line.lower()), "")
        return {"agent": label, "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                "throughput": throughput / baseline if baseline else float("nan"), "rss": rss,
                "rss_end": samples[-1][1] if samples else 0.0,
                "rss_peak": max((r for _, r in samples), default=0.0),
                "growth_last_half_pct": 100 * (tail_mb - head_mb) / head_mb if head_mb else 0,
                "llvm_mapped": mapped, "ready": ready[:120], "parts": parts,
                "peak_parts": peak_parts}


def _interrupted(signum: int, frame: object) -> None:
    """SIGTERM unwinds like ^C: the service, the program and the agent are stopped."""
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", default=f"new={HERE.parent}")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--delay", type=float, default=20.0)
    ap.add_argument("--churn", action="store_true")
    ap.add_argument("--process-names", action="append", default=[],
                    help="limit the agent to processes matching this regex (repeatable), e.g. "
                    "the workloads: '^python3\\.12$' '^bench_work$' '^sh$' (on a shared "
                    "host, the agent's memory is then the workloads', not the host's)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the program's run without an agent (throughput not reported)")
    ap.add_argument("--timeline", help="write each agent's RSS timeline to TIMELINE.<label>.json")
    ap.add_argument("--probe", help="run the agent under bench.agent_probe, records in "
                    "PROBE.<label>.jsonl (container sizes per Class.attribute, object counts)")
    ap.add_argument("--probe-every", type=float, default=30.0)
    ap.add_argument("--tracemalloc", action="store_true",
                    help="with --probe: also the source lines whose allocations grew")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="compute threads of the C program (default: one per CPU)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupted)
    agents = [(a.split("=", 1)[0], Path(a.split("=", 1)[1]).resolve())
              for a in args.agents.split(",")]
    py = pyenv_python("3.12")
    if py is None:
        print("pyenv CPython 3.12 missing", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = build("bench_work", tmp, cflags=("-O2", "-g", "-pthread"),
                     source_dir=HERE / "workloads")
        service = subprocess.Popen([py, "-c", PY_SERVICE])
        try:
            baseline = 0.0 if args.no_baseline else run_program(work, args.seconds, args.threads)
            rows = [measure(label, src, work, args, baseline) for label, src in agents]
        finally:
            service.kill()
            service.wait()
    print(f"\nbaseline {baseline:.0f} iters/s; churn={'on' if args.churn else 'off'}; "
          f"program {args.seconds:.0f} s from {args.delay:.0f} s after the agent's start\n")
    marks = [m for m in MARKS if m < args.delay + args.seconds]
    print("| agent | agent CPU % of one core | program throughput | RSS "
          + " / ".join(f"{m} s" for m in marks) + " / end (MB) | peak | growth, last half "
          "| LLVM mapped |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rss = r["rss"]
        assert isinstance(rss, dict)
        timeline = " / ".join(f"{rss[f'{m}s']:.0f}" for m in marks)
        print(f"| {r['agent']} | {r['cpu_pct']:.1f} | {r['throughput']:.3f} | "
              f"{timeline} / {r['rss_end']:.0f} | "
              f"{r['rss_peak']:.0f} | {r['growth_last_half_pct']:.1f}% | {r['llvm_mapped']} |")
    print("\nPer process of the tree (MB resident: anonymous / file / shmem):\n")
    print("| agent | when | process | anon | file | shmem |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        parts = r["parts"]
        assert isinstance(parts, dict)
        peak = r["peak_parts"]
        assert isinstance(peak, list)
        when = [*parts.items()] + ([(f"peak ({peak[0]['t']} s)", peak[1:])] if peak else [])
        for mark, procs in when:
            for p in procs:
                print(f"| {r['agent']} | {mark} | {p['role']} | {p.get('anon', 0)} | "
                      f"{p.get('file', 0)} | {p.get('shmem', 0)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
