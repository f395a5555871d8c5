"""Configuration of the ``python`` receiver.

Targets: ``pids`` and ``process_names`` (matched against comm, the
executable's base name and the script or ``-m`` module named on the command
line). With neither, ``discovery`` (on by default) samples every process whose
executable is a CPython interpreter (3.8-3.13), except the agent itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class PythonReceiverConfig:
    # Which processes to sample; see the module docstring.
    pids: list[int] = field(default_factory=list)
    # Matched against comm, the executable and the script/module name of the command line.
    process_names: list[str] = field(default_factory=list)
    # With neither pids nor process_names: every CPython 3.8-3.13 interpreter found.
    discovery: bool = True
    # Samples per second per process.
    sample_rate: int = 100
    # One profile window per process per ``duration`` (whole seconds: py-spy's unit).
    duration: float = field(default=10.0, metadata={"duration": True})
    # How often to look for new processes (exited ones are noticed at window end).
    scan_interval: float = field(default=5.0, metadata={"duration": True})
    # Also sample threads that are sleeping or waiting (profile ``wall`` instead of ``cpu``).
    include_idle: bool = False
    # Only sample the thread holding the GIL.
    gil_only: bool = False
    # Merge native (C/C++/Rust) frames into the Python stacks (py-spy --native).
    # py-spy can only unwind native stacks of a paused thread, so with native
    # the target is paused for each sample whatever ``nonblocking`` says
    # (measured on this machine at 100 Hz: costs the target about what
    # pausing without native does, within the ±3% noise of the measurement).
    native: bool = False
    # Read the target without pausing it: cheaper for the target, stacks may
    # rarely be torn. Measured on this machine: pausing costs a 100 Hz target
    # ~9% of its throughput, non-blocking ~4%, with the same accuracy.
    # Does not apply with ``native`` (py-spy refuses --native --nonblocking).
    nonblocking: bool = True
    # Seed compatibility (``agent.profiling.python.asyncio``). Suspended asyncio
    # tasks have no thread stack an outside sampler could read: await chains
    # come from the in-process SDK (``telegen.sdk``) with ``asyncio=True``.
    asyncio: bool = False
    # Engine: only ``py-spy`` for now (see engine.py).
    engine: str = "py-spy"
    # The py-spy executable; empty = next to the agent's interpreter, else on PATH.
    py_spy: str = ""

    def validate(self) -> None:
        if not 1 <= self.sample_rate <= 1000:
            raise ValueError(f"sample_rate must be between 1 and 1000 Hz (got {self.sample_rate})")
        if self.duration < 1:
            raise ValueError(f"duration must be >= 1s (got {self.duration}s)")
        if self.scan_interval <= 0:
            raise ValueError(f"scan_interval must be > 0 (got {self.scan_interval}s)")
        if any(p <= 0 for p in self.pids):
            raise ValueError(f"pids must be positive process ids (got {self.pids})")
        if any(not n.strip() for n in self.process_names):
            raise ValueError("process_names: empty name; remove it")
        if self.engine != "py-spy":
            raise ValueError(f"engine must be \"py-spy\" (got {self.engine!r})")
        if not self.pids and not self.process_names and not self.discovery:
            raise ValueError("nothing to sample: set pids, process_names or discovery: true")

    @property
    def window_seconds(self) -> int:
        """``duration`` rounded up to whole seconds."""
        return max(1, math.ceil(self.duration - 1e-9))
