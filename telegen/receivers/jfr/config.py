"""Receiver ``jfr``: Java profiling through JDK Flight Recorder."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class JfrReceiverConfig:
    # Event switches (the seed's agent.profiling.java block):
    cpu: bool = True          # jdk.ExecutionSample -> "cpu"
    memory: bool = True       # jdk.ObjectAllocationSample -> "alloc"
    gc: bool = True           # jdk.GarbageCollection (+ GC phase pauses) -> "gc"
    locks: bool = True        # jdk.JavaMonitorEnter -> "mutex", jdk.ThreadPark -> "park"
    # Which JVMs to record. With neither pids nor process_names, every JVM found
    # by discovery is recorded (``discover: false`` turns that off).
    pids: list[int] = field(default_factory=list)
    # Matched against comm, the executable's base name, and the command line's
    # main class (last dotted part too) or jar base name, e.g. ``Workload``, ``app.jar``.
    process_names: list[str] = field(default_factory=list)
    # Record every JVM found (java launchers, hsperfdata) when no pids/names are given.
    discover: bool = True
    # CPU sampling rate in Hz -> jdk.ExecutionSample period (1000/rate ms, >= 1 ms).
    sample_rate: int = 100
    # Monitor-enter and park events shorter than this are not recorded.
    lock_threshold: float = field(default=0.01, metadata={"duration": True})
    # One profile window per JVM per ``duration`` (a JFR.dump each time).
    duration: float = field(default=10.0, metadata={"duration": True})
    # How often to look for new JVMs and exited ones.
    scan_interval: float = field(default=5.0, metadata={"duration": True})
    # An existing directory inside the JVM's own filesystem (reached through
    # /proc/PID/root, so JVMs in containers work) where the agent makes one
    # fresh directory per recording (random name, owned by the JVM's user);
    # a symlink on the way is refused.
    dump_directory: str = "/tmp"
    # Largest JFR file (dump or dropped) read; a bigger one is refused unread.
    max_file_bytes: int = 256 << 20
    # The jcmd launcher; a bare name is looked up on PATH.
    jcmd: str = "jcmd"
    # Longest wait for one jcmd call (JFR.start/dump/stop) before it counts as failed.
    jcmd_timeout: float = field(default=30.0, metadata={"duration": True})
    # Also read .jfr files dropped here (-XX:StartFlightRecording, async-profiler).
    # Symlinks are never followed, in the path or in the directory: give its real path.
    directory: str = ""
    # How often ``directory`` is looked at; a file is read once its size holds still.
    poll_interval: float = field(default=2.0, metadata={"duration": True})
    # Delete each dropped file once it was read and handed on.
    delete_after_read: bool = False

    def validate(self) -> None:
        if not 1 <= self.sample_rate <= 1000:
            raise ValueError(f"sample_rate must be between 1 and 1000 Hz (got {self.sample_rate})")
        for name in ("duration", "scan_interval", "jcmd_timeout", "poll_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)}s)")
        if self.lock_threshold < 0:
            raise ValueError(f"lock_threshold must be >= 0 (got {self.lock_threshold}s)")
        if any(p <= 0 for p in self.pids):
            raise ValueError(f"pids must be positive process ids (got {self.pids})")
        if any(not n.strip() for n in self.process_names):
            raise ValueError("process_names: empty name; remove it")
        if not self.dump_directory.startswith("/"):
            raise ValueError(f"dump_directory must be an absolute path (got "
                             f"{self.dump_directory!r})")
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be > 0 (got {self.max_file_bytes})")
        if not (self.cpu or self.memory or self.gc or self.locks):
            raise ValueError("every event switch (cpu, memory, gc, locks) is off; "
                             "turn one on or remove the receiver")

    @property
    def profile_types(self) -> tuple[str, ...]:
        out = []
        if self.cpu:
            out.append("cpu")
        if self.memory:
            out.append("alloc")
        if self.locks:
            out += ["mutex", "park"]
        if self.gc:
            out.append("gc")
        return tuple(out)

    @property
    def period_ms(self) -> int:
        return max(1, round(1000 / self.sample_rate))
