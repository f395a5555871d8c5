"""The ``python`` receiver's ``include_idle``, ``gil_only`` and ``native``
options end to end: the agent (``python -m telegen run``) samples real CPython
3.11, 3.12 and 3.13 programs with real py-spy, through two receivers at once
(option off, option on), each writing its own pprof files.

Needs root (ptrace) and pyenv's interpreters; fails, never skips, without them."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from telegen.pdata import Frame, FrameKind
from telegen.testing.agent import start_telegen, wait_until
from telegen.testing.pyprog import pprof_samples, require_pythons, samples_by_pid

VERSIONS = ("3.11", "3.12", "3.13")
RATE = 100
ENOUGH = 250          # samples per process and receiver before the agent is stopped

PROGRAM = '''
import hashlib, os, sys, threading, time, zlib

def hot():
    x = 0
    while True:
        for i in range(1000):
            x += i * i

def py_hot():
    x = 0
    while True:
        for i in range(1000):
            x += i * i

def idle_wait():
    while True:
        time.sleep(3600)                   # never wakes during a test

def c_call():
    data = bytes(32 << 20)
    while True:
        hashlib.sha256(data).digest()      # the GIL is released while hashing

def native_work():
    data = os.urandom(4 << 20)
    while True:
        zlib.compress(data, 9)             # time in libz's deflate

mode = sys.argv[1]
if mode == "idle":
    threading.Thread(target=idle_wait, name="idler", daemon=True).start()
    hot()
elif mode == "gil":
    threading.Thread(target=c_call, name="c_call", daemon=True).start()
    py_hot()
else:
    native_work()
'''


@pytest.fixture(scope="module")
def pythons() -> dict[str, str]:
    return require_pythons(VERSIONS)


def py_name(fn: str) -> str:
    return f"options_prog.{fn}"          # module.function, as the receiver names frames


def in_stack(stack: tuple[Frame, ...], fn: str) -> bool:
    return any(f.kind == FrameKind.PYTHON and f.name == py_name(fn) for f in stack)


def sampled(tmp_path: Path, pythons: dict[str, str], mode: str, option: str
            ) -> tuple[dict[str, int], Path, Path, str]:
    """Run the program in ``mode`` on every version and the agent with two
    receivers on them: ``option`` false (pprof files in the first directory)
    and true (the second). Returns version -> pid, both directories and the log."""
    prog = tmp_path / "options_prog.py"
    prog.write_text(PROGRAM)
    off, on = tmp_path / "off", tmp_path / "on"
    procs = {v: subprocess.Popen([exe, str(prog), mode]) for v, exe in pythons.items()}
    pids = {v: p.pid for v, p in procs.items()}
    receiver = (f"{{pids: {sorted(pids.values())}, sample_rate: {RATE}, duration: 2s, "
                f"scan_interval: 0.2s, {option}: ")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
receivers:
  python/off: {receiver}false}}
  python/on: {receiver}true}}
exporters:
  pprof_file/off: {{directory: {off}}}
  pprof_file/on: {{directory: {on}}}
service:
  pipelines:
    profiles/off: {{receivers: [python/off], exporters: [pprof_file/off]}}
    profiles/on: {{receivers: [python/on], exporters: [pprof_file/on]}}
""")
    log = tmp_path / "agent.log"

    def enough() -> bool:
        if "cannot sample pid" in log.read_text():
            return True                    # fail below with the reason
        return all(sum(samples_by_pid(d).get(pid, Counter()).values()) >= ENOUGH
                   for d in (off, on) for pid in pids.values())

    try:
        agent = start_telegen(["run", "-c", str(cfg)], log)
        try:
            ready = wait_until(enough, 60, 0.5)
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()               # fails below, leaving nothing running
                agent.wait()
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    text = log.read_text()
    assert ready and "cannot sample pid" not in text, text
    assert agent.returncode == 0, f"agent exit {agent.returncode} after SIGTERM:\n{text}"
    return pids, off, on, text


def by_function(out: Path, pid: int, names: tuple[str, ...]) -> Counter[str]:
    """Samples of ``pid`` by the first of ``names`` on the stack ("other" if none)."""
    got: Counter[str] = Counter()
    for p, stack, n in pprof_samples(out):
        if p == pid:
            got[next((fn for fn in names if in_stack(stack, fn)), "other")] += n
    return got


def shares(c: Counter[str]) -> dict[str, float]:
    total = sum(c.values())
    return {k: round(v / total, 3) for k, v in c.items()}


def test_include_idle(tmp_path: Path, pythons: dict[str, str]) -> None:
    pids, off, on, _ = sampled(tmp_path, pythons, "idle", "include_idle")
    assert {p.name.split("-")[0] for p in off.glob("*.pb.gz")} == {"cpu"}
    assert {p.name.split("-")[0] for p in on.glob("*.pb.gz")} == {"wall"}
    for v, pid in pids.items():
        without = by_function(off, pid, ("hot", "idle_wait"))
        with_idle = by_function(on, pid, ("hot", "idle_wait"))
        print(f"CPython {v}: include_idle false {dict(without)} {shares(without)}; "
              f"true {dict(with_idle)} {shares(with_idle)}")
        # Off: only the running thread. The idler sleeps through the whole
        # test, so 0 is expected; 1% allows a thread state misread.
        assert without["idle_wait"] <= 0.01 * without.total(), (v, without)
        assert without["hot"] >= 0.98 * without.total(), (v, without)
        # On: py-spy --idle reads every thread at every tick, so each of the two
        # threads has half of the samples; ±5 points allow for ticks where one
        # thread's read failed or the program was still starting.
        assert abs(with_idle["idle_wait"] / with_idle.total() - 0.5) <= 0.05, (v, with_idle)
        assert abs(with_idle["hot"] / with_idle.total() - 0.5) <= 0.05, (v, with_idle)


def test_gil_only(tmp_path: Path, pythons: dict[str, str]) -> None:
    pids, off, on, _ = sampled(tmp_path, pythons, "gil", "gil_only")
    for v, pid in pids.items():
        both = by_function(off, pid, ("py_hot", "c_call"))
        gil = by_function(on, pid, ("py_hot", "c_call"))
        print(f"CPython {v}: gil_only false {dict(both)} {shares(both)}; "
              f"true {dict(gil)} {shares(gil)}")
        # Off: both threads run on a CPU and are sampled at every tick (~half
        # each); c_call only drops out while it waits to take the GIL back after
        # each ~60 ms hash (up to one 5 ms switch interval), so >= 30% each
        # leaves room for a loaded machine.
        assert both["c_call"] >= 0.30 * both.total(), (v, both)
        assert both["py_hot"] >= 0.30 * both.total(), (v, both)
        # On: c_call holds the GIL only between two hashes (microseconds per
        # 60 ms): at most 2% of samples; the rest is the GIL holder py_hot.
        assert gil["c_call"] <= 0.02 * gil.total(), (v, gil)
        assert gil["py_hot"] >= 0.95 * gil.total(), (v, gil)


def native_under_python(stack: tuple[Frame, ...]) -> bool:
    """libz's deflate is on the stack as a callee (leaf-ward) of native_work."""
    work = next((i for i, f in enumerate(stack)
                 if f.kind == FrameKind.PYTHON and f.name == py_name("native_work")), None)
    return work is not None and any(
        f.kind == FrameKind.NATIVE and f.name == "deflate" and "libz" in f.lines[-1].file
        for f in stack[:work])


def stacks_of(out: Path, pid: int) -> list[tuple[tuple[Frame, ...], int]]:
    return [(stack, n) for p, stack, n in pprof_samples(out) if p == pid]


def test_native_with_default_nonblocking(tmp_path: Path, pythons: dict[str, str]) -> None:
    # nonblocking stays at its default (true): py-spy refuses --native with
    # --nonblocking, so the receiver must leave the latter out.
    pids, off, on, log = sampled(tmp_path, pythons, "native", "native")
    assert "native: true pauses each target" in log
    for v, pid in pids.items():
        plain = stacks_of(off, pid)
        mixed = stacks_of(on, pid)
        total_off = sum(n for _, n in plain)
        total_on = sum(n for _, n in mixed)
        under = sum(n for s, n in mixed if native_under_python(s))
        in_work = sum(n for s, n in plain if s[0].name == py_name("native_work"))
        with_native = sum(n for s, n in plain if any(f.kind == FrameKind.NATIVE for f in s))
        print(f"CPython {v}: native false {total_off} samples, {in_work} with leaf "
              f"native_work, {with_native} with native frames; true {total_on} samples, "
              f"{under} with libz deflate under native_work")
        # Off: Python frames only, the leaf being the function that called zlib.
        assert with_native == 0, v
        assert in_work >= 0.95 * total_off, (v, in_work, total_off)
        # On: the C time shows as libz's deflate called from native_work (py-spy
        # read 191-194 of 199 such samples in a trial run; 80% leaves room).
        assert under >= 0.80 * total_on, (v, under, total_on)
