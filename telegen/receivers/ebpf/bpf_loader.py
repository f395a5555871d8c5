"""Compile, load and attach telegen's BPF programs through BCC.

The only module that imports ``bcc``. Options become ``-D`` cflags; the
program text is the selected ``bpf/*.bpf.c`` files included in order, so
the programs share one set of maps (stack maps, filters, the event ring).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)



def find_bpf_dir() -> Path:
    """The BPF sources: ``bpf/`` of the source tree (editable install, the
    Docker image), else ``<prefix>/share/telegen/bpf`` where a wheel install
    puts them (pyproject's data-files)."""
    tree = Path(__file__).resolve().parents[3] / "bpf"
    installed = Path(sys.prefix) / "share" / "telegen" / "bpf"
    return tree if (tree / "telegen.h").exists() or not (installed / "telegen.h").exists() \
        else installed


BPF_DIR = find_bpf_dir()
STACK_DEPTH = 127            # PERF_MAX_STACK_DEPTH: the kernel's own limit
MAX_PROCS = 16384
MAX_THREADS = 32768
EVENT_RING_PAGES = 64        # 256 KiB ring for control + timestamp events
USTACK_RING_PAGES = 1024     # 4 MiB ring for user stack copies (CFI unwinding)
USNAP_ENTRIES = 8192         # remembered stack copies (dedupe, bpf/telegen.h)
USNAP_BUDGET = 100           # new off-CPU stack copies per CPU per second
MAX_LIVE = 65536             # inuse memory: sampled live allocations tracked (bpf/memory.bpf.c)
MAX_SPILL = 4096             # per-thread counts when a counts map is full (bpf/telegen.h)


class BpfLoadError(RuntimeError):
    """Compiling, loading or attaching failed; the message says what to run."""


@dataclass
class BpfOptions:
    cpu: bool = True
    off_cpu: bool = True
    sample_rate: int = 99
    max_stacks: int = 16384
    max_counts: int = 16384
    include_kernel: bool = False
    timestamps: bool = False
    filter_targets: bool = False
    watch_exec: bool = False
    self_profile: bool = False
    self_tgid: int = field(default_factory=os.getpid)
    off_cpu_threshold_ns: int = 0
    user_stacks: bool = False        # copy user stacks for CFI unwinding
    memory: bool = False
    memory_inuse: bool = False
    sample_every_bytes: int = 512 * 1024
    mutex: bool = False
    mutex_threshold_ns: int = 0

    def cflags(self) -> list[str]:
        flags = [
            f"-I{BPF_DIR}",
            "-Wno-visibility",
            f"-DMAX_STACKS={self.max_stacks}",
            f"-DMAX_COUNTS={self.max_counts}",
            f"-DMAX_THREADS={MAX_THREADS}",
            f"-DMAX_PROCS={MAX_PROCS}",
            f"-DSTACK_DEPTH={STACK_DEPTH}",
            f"-DEVENTS_PAGES={EVENT_RING_PAGES}",
            f"-DSELF_TGID={self.self_tgid}",
            f"-DOFFCPU_MIN_NS={self.off_cpu_threshold_ns}ULL",
            f"-DSAMPLE_EVERY_BYTES={self.sample_every_bytes}ULL",
            f"-DMAX_LIVE={MAX_LIVE}",
            f"-DMAX_SPILL={MAX_SPILL}",
            f"-DMUTEX_MIN_NS={self.mutex_threshold_ns}ULL",
        ]
        if self.user_stacks:
            flags += ["-DUSER_STACKS", f"-DUSTACK_PAGES={USTACK_RING_PAGES}",
                      f"-DUSNAP_ENTRIES={USNAP_ENTRIES}", f"-DUSNAP_BUDGET={USNAP_BUDGET}"]
        for name, on in (("SELF_PROFILE", self.self_profile),
                         ("FILTER_TARGETS", self.filter_targets),
                         ("WATCH_EXEC", self.watch_exec),
                         ("INCLUDE_KERNEL", self.include_kernel),
                         ("TIMESTAMPS", self.timestamps),
                         ("OFF_CPU", self.off_cpu), ("CPU", self.cpu),
                         ("MUTEX", self.mutex),
                         ("MEM_INUSE", self.memory and self.memory_inuse)):
            if on:
                flags.append(f"-D{name}")
        return flags

    def source(self) -> str:
        files = (["cpu.bpf.c"] if self.cpu else []) + \
                (["offcpu.bpf.c"] if self.off_cpu else []) + \
                (["memory.bpf.c"] if self.memory else []) + \
                (["lock.bpf.c"] if self.mutex else []) + ["proc.bpf.c"]
        # Concatenated (header first), not #included: BCC rewrites map methods and
        # TRACEPOINT_PROBE only in the main text; the include guard skips the
        # programs' own `#include "telegen.h"`.
        return "\n".join((BPF_DIR / f).read_text() for f in ["telegen.h", *files])


class LoadedBpf:
    """The loaded BCC module and its attachments; ``close()`` detaches everything."""

    def __init__(self, options: BpfOptions) -> None:
        self.options = options
        try:
            from bcc import BPF, PerfSWConfig, PerfType
        except ImportError as exc:
            raise BpfLoadError(
                f"cannot import bcc ({exc}); doctor check 'bcc' fails: install "
                "python3-bpfcc and link it into the venv (make install)") from exc
        try:
            self.bpf: Any = BPF(text=options.source().encode(), cflags=options.cflags())
        except Exception as exc:
            raise BpfLoadError(f"BPF compile/load failed: {exc}; run `telegen doctor` "
                               "(checks 'kernel headers', 'bpf syscall', 'capabilities')"
                               ) from exc
        try:
            if options.cpu:
                self.bpf.attach_perf_event(
                    ev_type=PerfType.SOFTWARE, ev_config=PerfSWConfig.CPU_CLOCK,
                    fn_name=b"on_cpu_sample", sample_freq=options.sample_rate, cpu=-1)
        except Exception as exc:
            self.close()
            raise BpfLoadError(f"attaching the cpu-clock perf event failed: {exc}; "
                               "doctor check 'perf_event access' / 'capabilities'") from exc
        # TRACEPOINT_PROBEs (sched_switch, exec, exit, futex) attach automatically at
        # load; memory uprobes are attached per process by uprobes.py.

    def table(self, name: str) -> Any:
        return self.bpf[name.encode()]

    def set_seq(self, seq: int) -> None:
        ctl = self.bpf[b"control"]
        ctl[ctl.Key(0)] = ctl.Leaf(seq & 0xFFFFFFFF)

    def program_ids(self) -> list[int]:
        """Kernel ids of our loaded programs (for bpf_stats run time)."""
        ids: list[int] = []
        for fn in getattr(self.bpf, "funcs", {}).values():
            info = _prog_id(fn.fd)
            if info:
                ids.append(info)
        return ids

    def close(self) -> None:
        bpf, self.bpf = getattr(self, "bpf", None), None
        if bpf is not None:
            try:
                bpf.cleanup()
            except Exception:  # detaching must never raise at shutdown
                log.exception("BPF cleanup failed")


def _prog_id(fd: int) -> int | None:
    """The program id behind a BPF fd, from /proc/self/fdinfo (no bpf() needed)."""
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("prog_id:"):
            return int(line.split()[1])
    return None
