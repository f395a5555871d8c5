"""The real agent, as `make run` starts it (the seed's agent.profiling block,
translated to ebpf → symbolize → filter → batch → exporters), against a live
workload: names come out of the symbolizer for the program, libc and the
kernel, and `go tool pprof` reads every file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from telegen.formats.pprof import decode
from telegen.pdata import FrameKind, Profile
from telegen.testing.agent import start_telegen
from telegen.testing.goprog import go_pprof
from telegen.testing.workloads import build


def _stacks(profile: Profile, pid: int) -> list[tuple[list[str], int]]:
    """(function names leaf first, value) of ``pid``'s samples."""
    out = []
    for s in profile:
        if dict(s.labels).get("process.pid") == pid:
            names = [fn for f in s.stack for fn in f.function_names()]
            out.append((names, s.values[profile.value_index()]))
    return out


def test_seed_block_profiles_the_host_with_names(tmp_path: Path) -> None:
    binary = build("tg_libc", tmp_path)
    out = tmp_path / "profiles"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent:
  profiling:
    enabled: true
    sample_rate: 99
    duration: 2s
    upload_interval: 60s
    symbols:
      include_kernel: true
exporters:
  pprof_file:
    directory: {out}
  console: {{}}
""")
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(cfg), "--duration", "12"], log)
    try:
        deadline = time.monotonic() + 30
        while "ebpf receiver started" not in log.read_text():
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        work = subprocess.Popen([str(binary), "4"])
        assert work.wait(30) == 0
        assert agent.wait(60) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
    text = log.read_text()
    assert "Total CPU time:" in text and "Total Off-CPU time:" in text
    files = sorted(out.glob("*.pb.gz"))
    names = {decode(f.read_bytes()).name: f for f in files}
    assert {"cpu", "off_cpu"} <= set(names), files

    cpu = decode(names["cpu"].read_bytes())
    cpu_stacks = _stacks(cpu, work.pid)
    total = sum(v for _, v in cpu_stacks)
    assert total, "the workload is missing from the host-wide CPU profile"
    assert sum(v for s, v in cpu_stacks if "burn_cpu" in s) >= 0.9 * total

    off = decode(names["off_cpu"].read_bytes())
    off_stacks = _stacks(off, work.pid)
    # the main thread blocks in libc's clock_nanosleep (leaf, named from libc's
    # symbols) under main and libc's __libc_start_call_main (from libc6-dbg),
    # above kernel frames named from /proc/kallsyms. (Its own caller doze() is
    # hidden by libc's missing frame pointer until CFI unwinding.)
    dozing = [s for s, _ in off_stacks if "clock_nanosleep" in s]
    assert dozing, off_stacks[:5]
    user = [fn for fn in dozing[0] if fn in ("clock_nanosleep", "main",
                                             "__libc_start_call_main")]
    assert user == ["clock_nanosleep", "main", "__libc_start_call_main"], dozing[0]
    kernel = {fn for smp in off for f in smp.stack if f.kind is FrameKind.KERNEL
              for fn in f.function_names()}
    assert {"schedule", "do_nanosleep"} <= kernel, sorted(kernel)[:20]
    assert not any(fn.startswith("0x") or "+0x" in fn for fn in kernel)

    for f in files:
        top = go_pprof("-top", "-lines", str(f))
        assert "flat%" in top
    assert "burn_cpu" in go_pprof("-top", str(names["cpu"]))
