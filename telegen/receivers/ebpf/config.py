"""Configuration of the ``ebpf`` receiver (key names follow the seed document)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

UNWINDERS = ("auto", "frame_pointer", "dwarf")
MEMORY_MODES = ("alloc", "inuse")
INTERPRETERS = ("python",)


@dataclass
class EbpfConfig:
    # CPU sampling frequency per CPU (Hz). 99 avoids lock-step with 100 Hz timers.
    sample_rate: int = 99
    # Length of one profile window: counts are read, cleared and emitted this often.
    duration: float = field(default=10.0, metadata={"duration": True})
    # On-CPU profile: perf_event cpu-clock samples on every CPU (samples/count, cpu/nanoseconds).
    cpu: bool = True
    # Off-CPU profile: blocked time per stack from sched_switch (off_cpu/nanoseconds).
    off_cpu: bool = True
    # Off-CPU intervals shorter than this are not recorded as samples (their
    # number and total time are still counted, and noted in each profile's
    # comments). 1ms keeps profiles about real waits (I/O, locks, sleeps)
    # rather than sub-millisecond scheduler hand-offs; set 0 to keep all.
    off_cpu_threshold: float = field(default=0.001, metadata={"duration": True})
    # Targeting: the whole host when both lists are empty.
    pids: list[int] = field(default_factory=list)
    process_names: list[str] = field(default_factory=list)   # regex on comm or exe path
    # Never profiled, whatever else matches (the agent itself is never profiled
    # unless self_profile).
    exclude_pids: list[int] = field(default_factory=list)
    # Also walk kernel stacks (the seed's symbols.include_kernel); false keeps user frames only.
    include_kernel: bool = False
    # Label samples with process.command_line (at most 512 characters). Off by
    # default: command lines hold secrets (tokens, passwords in arguments).
    command_line: bool = False
    # Keep a unix-ns timestamp (and the tid) per sample (for trace-span linking).
    timestamps: bool = False
    # Memory profile of native processes: uprobes on the allocator (malloc,
    # calloc, realloc, free, aligned variants) of each targeted process's libc,
    # or of the system libc when the whole host is profiled (every process
    # using it then pays the probe trap on each allocation call).
    memory: bool = False
    # alloc: allocations per window (alloc_objects, alloc_space); inuse: live
    # sampled allocations at each window's end (inuse_objects, inuse_space).
    memory_mode: str = "alloc"
    # Mean bytes between sampled allocations (as Go's MemProfileRate); totals
    # are scaled back without bias. 0 records every allocation.
    sample_every_bytes: int = 512 * 1024
    # Lock contention: time threads wait in futex(FUTEX_WAIT...) per stack
    # (pthread mutexes, condition variables, semaphores...).
    mutex: bool = False
    # Waits shorter than this are not recorded as samples (only counted).
    mutex_threshold: float = field(default=0.00001, metadata={"duration": True})
    # Entries of each stack map (two are kept, one per window generation).
    max_stacks: int = 16384
    # The agent never profiles itself unless asked.
    self_profile: bool = False
    # auto: CFI (.eh_frame) where a binary has it, frame pointers where not
    # (BPF copies user stacks, unwound in user space with per-binary tables
    # cached by build-id), so code without frame pointers (e.g. Debian's libc)
    # gives whole stacks; dwarf: CFI only (a frame without CFI ends the stack,
    # counted truncated); frame_pointer: stacks walked by the kernel only
    # (cheapest; stops at code built without frame pointers). Costs: README,
    # Performance.
    unwinding: str = "auto"
    # Interpreters whose own frames are read in BPF at every sample and merged
    # with the native stack (CPU, off-CPU, memory, lock profiles alike).
    # python: CPython 3.8-3.13 processes anywhere on the host (containers
    # too), found when first sampled; nothing is installed in them. [] turns
    # it off (interpreter internals such as _PyEval_EvalFrameDefault then
    # show instead).
    interpreters: list[str] = field(default_factory=lambda: ["python"])

    def validate(self) -> None:
        if not 1 <= self.sample_rate <= 10000:
            raise ValueError(f"sample_rate must be between 1 and 10000 (got {self.sample_rate})")
        if self.duration < 0.1:
            raise ValueError(f"duration must be at least 100ms (got {self.duration}s)")
        if self.off_cpu_threshold < 0:
            raise ValueError("off_cpu_threshold must not be negative")
        if not 256 <= self.max_stacks <= 1 << 20:
            raise ValueError(f"max_stacks must be between 256 and 1048576 (got {self.max_stacks})")
        for name, pids in (("pids", self.pids), ("exclude_pids", self.exclude_pids)):
            for pid in pids:
                if not isinstance(pid, int) or pid <= 0:
                    raise ValueError(f"{name}: process ids are positive integers (got {pid!r})")
        if len(self.exclude_pids) > 1024:
            raise ValueError("exclude_pids: at most 1024 entries")
        for pattern in self.process_names:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"process_names: invalid regular expression "
                                 f"{pattern!r}: {exc}") from None
        if not 0 <= self.sample_every_bytes <= 1 << 40:
            raise ValueError(f"sample_every_bytes must be between 0 and 2^40 "
                             f"(got {self.sample_every_bytes})")
        if self.mutex_threshold < 0:
            raise ValueError("mutex_threshold must not be negative")
        if self.memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode must be one of {', '.join(MEMORY_MODES)} "
                             f"(got {self.memory_mode!r})")
        if self.unwinding not in UNWINDERS:
            raise ValueError(f"unwinding must be one of {', '.join(UNWINDERS)} "
                             f"(got {self.unwinding!r})")
        for name in self.interpreters:
            if name not in INTERPRETERS:
                raise ValueError(f"interpreters: {name!r} is not one of "
                                 f"{', '.join(INTERPRETERS)}")
        if not (self.cpu or self.off_cpu or self.memory or self.mutex):
            raise ValueError("nothing to collect: enable at least one of cpu, off_cpu, "
                             "memory, mutex")

    @property
    def targeted(self) -> bool:
        """True when only chosen processes are profiled (pids or process_names)."""
        return bool(self.pids or self.process_names)

    def name_pattern(self) -> re.Pattern[str] | None:
        if not self.process_names:
            return None
        return re.compile("|".join(f"(?:{p})" for p in self.process_names))
