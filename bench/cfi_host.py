"""First sight on a whole host, with cold caches: the agent's CPU while it
meets new binaries, side by side for two source trees (the former
pyelftools build in the pipeline, and the current one).

One run per tree, each with an empty ``TELEGEN_CACHE_DIR``:

1. beside it run a pyenv CPython 3.12 (``libpython3.12.so``, 30 MB with
   DWARF) and a JDK 17 ``java`` (``libjvm.so``), both mostly idle (a short
   busy loop every 50 ms, so they are sampled);
2. the agent (``bench.agent``: the ebpf receiver, whole host, 99 Hz,
   ``unwinding: auto``, 2 s windows) starts; its CPU — the process, its
   children (the builder child and its workers) — is read for 20 s;
3. then the CPU-bound workload (bench/workloads/bench_work.c built
   ``-fomit-frame-pointer``, one thread per CPU) runs 15 s: its throughput
   against a run without the agent, and the agent's CPU meanwhile.

    python -m bench.cfi_host --old /tmp/old-tree [--new .]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from telegen.testing.workloads import build, parse_report

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PYENV_PYTHON = "/root/.pyenv/versions/3.12.1/bin/python3.12"
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
NOFP = ("-O2", "-g", "-fomit-frame-pointer", "-pthread")
PY_LOOP = ("import time\nwhile True:\n    t = time.time()\n"
           "    while time.time() - t < 0.005: pass\n    time.sleep(0.05)\n")
JAVA_LOOP = """public class Spin { public static void main(String[] a) throws Exception {
  while (true) { long t = System.nanoTime(); while (System.nanoTime() - t < 5_000_000) {}
  Thread.sleep(50); } } }"""


def tree_cpu_s(pid: int) -> float:
    """CPU of ``pid`` and of its live and reaped descendants."""
    total = 0.0
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    todo = [pid]
    while todo:
        p = todo.pop()
        f = stats.get(p)
        if f is None:
            continue
        total += sum(int(x) for x in f[11:15]) / CLK_TCK     # utime stime cutime cstime
        todo += children.get(p, [])
    return total


def workload(binary: Path, seconds: float) -> float:
    out = subprocess.run([str(binary), str(seconds), str(os.cpu_count() or 1)],
                         capture_output=True, text=True, check=True).stdout
    return float(parse_report(out)["iters_per_s"])


# bench.agent with the receiver's errors logged with their traceback
AGENT = ("import logging, sys; logging.basicConfig(level=logging.WARNING); "
         "logging.getLogger('bench.ebpf').setLevel(logging.DEBUG); "
         "sys.argv[0] = 'bench.agent'; from bench.agent import main; raise SystemExit(main())")


def one_run(tree: Path, binary: Path, warm_s: float, work_s: float,
            log: Path) -> dict[str, float]:
    baseline = workload(binary, work_s)          # just before: the host's load drifts
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as cache, \
            open(log, "w") as err:
        env = dict(os.environ, TELEGEN_CACHE_DIR=cache, PYTHONPATH=str(tree))
        agent = subprocess.Popen([sys.executable, "-c", AGENT, "--rate", "99",
                                  "--duration", "2", "--unwinding", "auto"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=tree, env=env, stderr=err)
        assert agent.stdout is not None and agent.stdin is not None
        line = agent.stdout.readline().split()
        assert line and line[0] == "ready", line
        c0, t0 = tree_cpu_s(agent.pid), time.monotonic()
        time.sleep(warm_s)
        c1, t1 = tree_cpu_s(agent.pid), time.monotonic()
        rate = workload(binary, work_s)
        c2, t2 = tree_cpu_s(agent.pid), time.monotonic()
        s0 = time.monotonic()
        try:
            agent.communicate(timeout=120)      # reads what it prints at the end
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.communicate()
        return {"stop_s": time.monotonic() - s0,
                "first_pct": 100 * (c1 - c0) / (t1 - t0), "first_cpu_s": c1 - c0,
                "work_pct": 100 * (c2 - c1) / (t2 - t1), "ratio": rate / baseline}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="source tree with the former build")
    ap.add_argument("--new", default=str(HERE.parent))
    ap.add_argument("--warm", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--logs", default=tempfile.gettempdir(), help="the agents' stderr")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = build("bench_work", Path(tmp), cflags=NOFP, source_dir=HERE / "workloads")
        (Path(tmp) / "Spin.java").write_text(JAVA_LOOP)
        side = [subprocess.Popen([PYENV_PYTHON, "-c", PY_LOOP]),
                subprocess.Popen([JAVA, "-Xmx64m", str(Path(tmp) / "Spin.java")])]
        try:
            time.sleep(5)                                    # java compiled Spin.java
            rows = {}
            for i, (name, tree) in enumerate((("former (pyelftools in the pipeline)", args.old),
                                              ("decoder + builder child", args.new))):
                rows[name] = one_run(Path(tree), binary, args.warm, args.seconds,
                                     Path(args.logs) / f"agent-{i}.log")
                print(name, rows[name], flush=True)
        finally:
            for p in side:
                p.kill()
                p.wait()
    print(f"| agent | CPU, first {args.warm:.0f} s (% of one core) | CPU s | "
          f"CPU beside the workload (%) | workload throughput vs without agent | "
          f"shutdown (s, killed at 120) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['first_pct']:.1f} | {r['first_cpu_s']:.2f} | "
              f"{r['work_pct']:.1f} | {r['ratio']:.3f} | {r['stop_s']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
