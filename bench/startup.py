"""Start-up to the first sample (#21), cold and warm, side by side.

For each agent checkout given (``--agents before=/work/startup-before,after=.``),
``--runs`` times, interleaved: ``python -m telegen run`` on the embedded
default (whole host, cpu + off_cpu at 99 Hz; ``--types memory,mutex`` adds
those profile types through a config of ``agent: profiling:`` switches) with
an EMPTY cache directory (``TELEGEN_CACHE_DIR``: cold, a fresh host), then
again with the directory the first run left (warm, a restart).

Measured from outside, from the instant before ``exec``:

- **first sample**: the first time a ``perf_event`` BPF program held by the
  agent's process tree (agent or compiler child) has run (``run_cnt`` in its
  fdinfo; run-time statistics are on while this bench holds a
  ``BPF_ENABLE_STATS`` descriptor), polled every 5 ms;
- **ready**: the receiver's "ebpf receiver started" log line (every profile
  type attached, the pipeline running);
- **sampling (log)**: what ``make run`` shows: the loader's log line says
  when, after its start, the sampler was attached ("sampling from"); that
  instant from the exec (log timestamps have millisecond resolution);
- **CPU to the first sample**: user + system time of the agent's process
  tree (live processes and reaped children) at that instant — what the wall
  time would be on an idle machine (the agent waits for its child), and far
  less sensitive to the other load on a shared one.

Also the loader's own timeline (its "BPF ... in" log line) and the load
average. Prints a markdown table (median of the runs, and every run).

    python -m bench.startup [--agents before=/work/startup-before,after=.] [--runs 3]
                            [--types memory,mutex]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

POLL_S = 0.005
BPF_ENABLE_STATS = 32
PROG_TYPE_PERF_EVENT = 7


@dataclass
class Run:
    agent: str
    mode: str
    first_sample_s: float | None = None
    first_sample_cpu_s: float | None = None
    ready_s: float | None = None
    sampling_log_s: float | None = None
    loader: str = ""
    load: str = field(default_factory=lambda: os.getloadavg().__repr__())


def enable_stats() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    attr = ctypes.create_string_buffer(struct.pack("=I", 0), 128)   # BPF_STATS_RUN_TIME
    fd = libc.syscall(321, BPF_ENABLE_STATS, attr, 128)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
    return int(fd)


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def sampled(pid: int) -> bool:
    """Has a perf_event program held by ``pid``'s process tree run?"""
    for p in tree(pid):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{p}/fd/{fd}") != "anon_inode:bpf-prog":
                    continue
                with open(f"/proc/{p}/fdinfo/{fd}") as f:
                    info = dict(line.split(":\t", 1) for line in f.read().splitlines()
                                if ":\t" in line)
            except (OSError, ValueError):
                continue
            if int(info.get("prog_type", "0")) == PROG_TYPE_PERF_EVENT and \
                    int(info.get("run_cnt", "0")) > 0:
                return True
    return False


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """utime + stime of the live tree, plus the reaped children's (cutime, cstime)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def log_instant(line: str) -> float | None:
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def sampling_from_log(line: str, wall0: float) -> float | None:
    """Exec -> the sampler attached, from the loader's line: its log instant
    minus its total ("in N s") plus its "sampling from" mark."""
    instant = log_instant(line)
    total = re.search(r" in ([0-9.]+)s \(", line)
    sampling = re.search(r"sampling from ([0-9.]+)s", line)
    if instant is None or total is None or sampling is None:
        return None
    return instant - float(total.group(1)) + float(sampling.group(1)) - wall0


def types_config(types: list[str], directory: Path) -> list[str]:
    """``-c FILE`` for the default agent with ``types`` switched on too."""
    if not types:
        return []
    path = directory / "types.yaml"
    path.write_text("agent:\n  profiling:\n    enabled: true\n" +
                    "".join(f"    {t}: true\n" for t in types))
    return ["-c", str(path)]


def start_once(label: str, src: Path, cache: Path, mode: str, timeout_s: float,
               types: list[str] | None = None) -> Run:
    run = Run(label, mode)
    work = Path(tempfile.mkdtemp(prefix="startup-"))
    log = work / "agent.log"
    env = dict(os.environ, TELEGEN_CACHE_DIR=str(cache), PYTHONPATH=str(src))
    config = types_config(types or [], work)
    with open(log, "wb") as out:
        wall0, t0 = time.time(), time.monotonic()
        agent = subprocess.Popen([sys.executable, "-m", "telegen", "run", *config], cwd=work,
                                 env=env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.monotonic() - t0 < timeout_s and agent.poll() is None:
            if run.first_sample_s is None and sampled(agent.pid):
                run.first_sample_s = time.monotonic() - t0
                run.first_sample_cpu_s = tree_cpu_s(agent.pid)
            text = log.read_text(errors="replace")
            ready = next((line for line in text.splitlines()
                          if "ebpf receiver started" in line), None)
            if ready and run.first_sample_s is not None:
                instant = log_instant(ready)
                run.ready_s = instant - wall0 if instant else None
                line = next((line for line in text.splitlines()
                             if "telegen.receivers.ebpf.bpf_loader" in line
                             and "BPF " in line), "")
                run.loader = line.split(": ", 1)[1] if line else ""
                run.sampling_log_s = sampling_from_log(line, wall0) if line else None
                break
            time.sleep(POLL_S)
    finally:
        try:
            os.killpg(agent.pid, signal.SIGKILL)
        except ProcessLookupError:      # it exited by itself (a start-up error): logged below
            pass
        agent.wait()
        if run.ready_s is None:
            print(f"{label} {mode}: no ready line; log tail:\n"
                  f"{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return run


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="after=.")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--types", default="", help="more profile types: memory,mutex")
    args = ap.parse_args()
    agents = [(a.split("=", 1)[0], Path(a.split("=", 1)[1]).resolve())
              for a in args.agents.split(",")]
    stats_fd = enable_stats()
    print(f"load before: {os.getloadavg()}", flush=True)
    runs: list[Run] = []
    try:
        for i in range(args.runs):
            for label, src in agents:
                cache = Path(tempfile.mkdtemp(prefix="startup-cache-"))
                try:
                    for mode in ("cold", "warm"):
                        r = start_once(label, src, cache, mode, args.timeout,
                                       [t for t in args.types.split(",") if t])
                        runs.append(r)
                        if mode == "warm" and "cache miss" in r.loader:
                            print("    (this warm start missed the cache: a BPF source "
                                  "changed since the cold one)", flush=True)
                        print(f"run {i + 1} {label} {mode}: first sample {fmt(r.first_sample_s)}"
                              f" (CPU {fmt(r.first_sample_cpu_s)}), sampling (log) "
                              f"{fmt(r.sampling_log_s)}, ready {fmt(r.ready_s)}, "
                              f"load {r.load}\n    {r.loader}",
                              flush=True)
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
    finally:
        os.close(stats_fd)
    print(f"load after: {os.getloadavg()}\n")
    print(f"types: cpu, off_cpu{''.join(', ' + t for t in args.types.split(',') if t)}\n")
    print("| agent | start | first sample (median) | its CPU (median) | sampling (log, median) "
          "| ready (median) | first sample, each run | its CPU, each run |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for label, _ in agents:
        for mode in ("cold", "warm"):
            mine = [r for r in runs if r.agent == label and r.mode == mode]
            print(f"| {label} | {mode} | {fmt(median([r.first_sample_s for r in mine]))} | "
                  f"{fmt(median([r.first_sample_cpu_s for r in mine]))} | "
                  f"{fmt(median([r.sampling_log_s for r in mine]))} | "
                  f"{fmt(median([r.ready_s for r in mine]))} | "
                  f"{', '.join(fmt(r.first_sample_s) for r in mine)} | "
                  f"{', '.join(fmt(r.first_sample_cpu_s) for r in mine)} |")


if __name__ == "__main__":
    main()
