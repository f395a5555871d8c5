"""The ``ebpf`` receiver: loads the BPF programs, owns the window ticker and
the event thread, and emits one ``cpu``, ``off_cpu``, ``alloc``/``inuse`` and
``mutex`` profile per window (those enabled)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from telegen.component import ComponentID, Consumer, CreateSettings, Host
from telegen.helpers import heap
from telegen.pdata import Profile, Profiles
from telegen.procinfo import ProcessCache, agent
from telegen.receivers.ebpf.accounting import Accounting
from telegen.receivers.ebpf.bpf_loader import LoadedBpf, options_for
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.cpython import PythonFrames
from telegen.receivers.ebpf.events import EventReader
from telegen.receivers.ebpf.golabels import GoLabels
from telegen.receivers.ebpf.kernel_btf import task_fsbase_offset
from telegen.receivers.ebpf.locks import LockProfiles
from telegen.receivers.ebpf.losses import Losses
from telegen.receivers.ebpf.memory import MemoryProfiles
from telegen.receivers.ebpf.profiles import ProfileBuilder
from telegen.receivers.ebpf.stacks import FramePointerStacks
from telegen.receivers.ebpf.targets import Targets
from telegen.receivers.ebpf.unwinding import CfiStacks
from telegen.receivers.ebpf.uprobes import Uprobes
from telegen.receivers.ebpf.window import MapReader, WindowData
from telegen.untrusted import Refusals
from telegen.unwind import TableCache

PROCESS_CACHE_SIZE = 8192


class EbpfReceiver:
    def __init__(self, settings: CreateSettings, config: EbpfConfig,
                 next_consumer: Consumer) -> None:
        self._settings = settings
        self._config = config
        self._next = next_consumer
        self._log = settings.logger
        self._acct = Accounting(settings.telemetry)
        self._losses = Losses(settings.telemetry)
        self._procs = ProcessCache(PROCESS_CACHE_SIZE)
        self._lock = threading.Lock()        # one window at a time (ticker vs shutdown)
        self._stop = threading.Event()
        self._started = False
        self._shut = False
        self._children_off: Callable[[], None] = lambda: None
        self._bpf: LoadedBpf | None = None
        self._events: EventReader | None = None
        self._reader: MapReader | None = None
        self._builder: ProfileBuilder | None = None
        self._thread: threading.Thread | None = None
        self._cfi: CfiStacks | None = None
        self._memory: MemoryProfiles | None = None
        self._go: GoLabels | None = None       # Go (#26)
        self._python: PythonFrames | None = None   # CPython (#22)
        self._locks: LockProfiles | None = None
        self.uprobes: Uprobes | None = None
        self.startup_s = 0.0
        self._targets = Targets(pids=config.pids, pattern=config.name_pattern(),
                                exclude_pids=config.exclude_pids, self_pid=os.getpid(),
                                self_profile=config.self_profile)

    # -- lifecycle -----------------------------------------------------------------
    def start(self, host: Host) -> None:
        """Fails fast (doctor checks, BPF compile/attach); takes 2-6 s (BCC/LLVM, in
        the short-lived compiler child)."""
        from telegen import doctor

        t0 = time.monotonic()
        self._host = host
        # 'bcc' is checked by the compiler child (importing it here would map
        # libbcc/LLVM into the agent for good); its failure says the same fix
        doctor.require(tuple(c for c in doctor.EBPF_PROFILING if c != "bcc"))
        c = self._config
        # options_for: the same options the early compile (cli.cmd_run) was started with
        self._bpf = LoadedBpf(options_for(c, filtering=self._targets.filtering),
                              refusals=Refusals(self._settings.telemetry, self._log))
        try:
            bpf = self._bpf
            self._targets.install(bpf.table("targets"), bpf.table("excluded"))
            # the agent's own children (index builders, c++filt) are not profiled
            self._children_off = agent.on_children(self._targets.own_child)
            fp = FramePointerStacks((bpf.table("stacks0"), bpf.table("stacks1")),
                                    (bpf.table("overflow0"), bpf.table("overflow1")))
            stacks: FramePointerStacks | CfiStacks = fp
            if c.unwinding != "frame_pointer":
                t = self._settings.telemetry
                tables = TableCache(refusals=Refusals(t, self._log), rejected_counter=lambda r:
                                    t.counter("unwind_rejected_objects", reason=r))
                self._cfi = stacks = CfiStacks(fp, self._procs, name=c.unwinding,
                                               wanted=self._targets.wanted,
                                               on_error=self._on_error, tables=tables,
                                               telemetry=t, max_wait_s=min(c.duration, 10.0))
                self._cfi.attach(bpf.bpf)
            self._reader = MapReader(bpf, stacks, cpu=c.cpu, off_cpu=c.off_cpu)
            self._builder = ProfileBuilder(
                reader=self._reader, processes=self._procs, sample_rate=c.sample_rate,
                include_kernel=c.include_kernel, resource=self._resource(stacks.name),
                count_stack_problem=self._acct.stack_problem, wanted=self._targets.wanted,
                unwind_outcome=self._cfi.outcome if self._cfi else None,
                count_unwind=self._acct.unwound, command_line=c.command_line)
            self._start_go()                                   # Go (#26)
            self._start_python()                               # CPython (#22)
            self._events = EventReader(bpf.bpf, on_new_process=self._on_new_process,
                                       on_exec=self._on_exec, on_exit=self._on_exit,
                                       on_error=self._on_error)
            self._events.start()
            if self._cfi is not None:
                self._cfi.start()
            self._start_memory_and_locks()
        except Exception:
            if self.uprobes is not None:
                self.uprobes.close()
            self._bpf.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"ebpf-window[{self._id}]",
                                        daemon=True)
        self._thread.start()
        self._started = True
        self.startup_s = time.monotonic() - t0
        self._log.info("ebpf receiver started in %.1fs: cpu=%s off_cpu=%s %d Hz, memory=%s "
                       "mutex=%s, window %gs, %s, unwinding %s", self.startup_s, c.cpu, c.off_cpu,
                       c.sample_rate, c.memory and c.memory_mode, c.mutex, c.duration,
                       "targeted" if self._targets.filtering else "whole host", c.unwinding)

    def _start_go(self) -> None:
        """Go (#26): goroutine labels on samples, goroutines behind g0 samples."""
        bpf, builder = self._bpf, self._builder
        assert bpf is not None and builder is not None
        try:
            fsbase = task_fsbase_offset()
        except (ValueError, OSError) as exc:     # BtfError is a ValueError
            self._log.warning("ebpf: no Go labels: thread.fsbase not in the kernel's BTF: %s", exc)
            return
        self._go = GoLabels(bpf.table, self._procs, fsbase_offset=fsbase,
                            refusals=Refusals(self._settings.telemetry, self._log))
        builder.go_labels = self._go.labels
        if self._cfi is not None:
            self._cfi.goroutine_context = self._go.goroutine_context

    def _start_python(self) -> None:
        """CPython (#22): Python frames walked in BPF, merged into native stacks."""
        bpf, builder = self._bpf, self._builder
        assert bpf is not None and builder is not None
        if "python" not in self._config.interpreters:
            return
        try:
            fsbase = task_fsbase_offset()
        except (ValueError, OSError) as exc:      # BtfError is a ValueError
            self._log.warning("ebpf: no Python frames: thread.fsbase not in the kernel's "
                              "BTF: %s", exc)
            return
        self._python = PythonFrames(bpf.table, fsbase_offset=fsbase,
                                    telemetry=self._settings.telemetry,
                                    refusals=Refusals(self._settings.telemetry, self._log))
        builder.python_frames = self._python.merge
        self._python.start()

    def _start_memory_and_locks(self) -> None:
        c, bpf, reader, builder = self._config, self._bpf, self._reader, self._builder
        assert bpf is not None and reader is not None and builder is not None
        telemetry = self._settings.telemetry
        if c.mutex:
            self._locks = LockProfiles(bpf=bpf.bpf, builder=builder, telemetry=telemetry,
                                       threshold_ns=int(c.mutex_threshold * 1e9))
        if not c.memory:
            return
        self._memory = MemoryProfiles(
            bpf=bpf.bpf, reader=reader, builder=builder, processes=self._procs,
            inuse=c.memory_mode == "inuse", sample_every_bytes=c.sample_every_bytes,
            telemetry=telemetry)
        self.uprobes = Uprobes(bpf.bpf, inuse=c.memory_mode == "inuse",
                               wanted=self._targets.wanted, on_error=self._on_error,
                               refusals=Refusals(telemetry, self._log))
        self.uprobes.start(self._targets.initial_pids() if self._targets.filtering else None)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Emit the last (partial) window, detach, release. Idempotent."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        self._stop.set()
        self._children_off()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self._started:
            self._window()
        if self._events is not None:
            self._events.stop()
        if self.uprobes is not None:
            self.uprobes.close()
        if self._cfi is not None:
            self._cfi.stop()
        if self._python is not None:                       # CPython (#22)
            self._python.stop()
        if self._bpf is not None:
            self._bpf.close()
        self._bpf = None

    # -- the window loop -------------------------------------------------------------
    @property
    def _id(self) -> ComponentID:
        return self._settings.id

    def _run(self) -> None:
        next_at = time.monotonic() + self._config.duration
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self._config.duration
            self._window()
            heap.trim()          # the window's transient buffers: pages back to the kernel

    def _window(self) -> None:
        """Close the current window and send its profiles. Never raises."""
        with self._lock:
            try:
                profiles = self._collect()
            except Exception as exc:
                self._on_error(exc)
                return
        if profiles is None or not len(profiles):
            return
        try:
            self._next.consume(profiles)
        except Exception as exc:
            self._log.warning("ebpf: downstream rejected a window: %s", exc)
            self._acct.errors.add(1)

    def _collect(self) -> Profiles | None:
        reader, builder, events = self._reader, self._builder, self._events
        if reader is None or builder is None or events is None:
            return None
        c = self._config
        closed, start, end = reader.flip()
        out: list[Profile] = []
        try:
            events.drain()
            data = reader.read(closed, start, end)
            self._acct.window_stats(data.stats)
            if c.cpu:
                out.append(builder.cpu(data, events.take_timestamps("cpu", closed)))
                period = 1_000_000_000 // c.sample_rate
                self._losses.spilled(out[-1], "cpu", data.spilled, data.stats, builder.labels,
                                     builder.wanted, lambda n, _v, _e: [n, n * period])
            if c.off_cpu:
                out.append(builder.off_cpu(data, events.take_timestamps("off_cpu", closed),
                                           int(c.off_cpu_threshold * 1e9)))
                self._off_cpu_losses(out[-1], data)
            for extra in (self._memory, self._locks):
                if extra is not None:
                    out.append(extra.profile(data))
        finally:
            reader.finish(closed)
            builder.reset()
            if self._python is not None:                   # CPython (#22)
                self._python.window()
            self._procs.release_exited()
            self._targets.end_window()
        for p in out:
            self._acct.accepted[p.name].add(sum(s.values[0] for s in p))
        self._acct.processes.set(len(self._procs))
        self._acct.targets.set(len(self._targets))
        return Profiles(out)

    def _off_cpu_losses(self, p: Profile, data: WindowData) -> None:
        builder = self._builder
        assert builder is not None
        self._losses.spilled(p, "off_cpu", data.spilled, data.stats, builder.labels,
                             builder.wanted, lambda n, ns, _e: [n, ns])
        self._losses.lost(p, "off_cpu", "starts_full", data.stats.get("starts_full", 0),
                          "off-CPU intervals")
        self._losses.lost(p, "off_cpu", "unpaired", data.stats.get("offcpu_unpaired", 0),
                          "off-CPU intervals")

    # -- events ----------------------------------------------------------------------
    def _on_new_process(self, pid: int) -> None:
        if self._targets.pattern is not None and not self._targets.classify(pid):
            return                      # sampled while unclassified; dropped at read time
        if pid not in self._procs:
            self._procs.capture(pid)
        if self._go is not None:                           # Go (#26)
            self._go.seen(pid)
        if self._python is not None:                       # CPython (#22)
            self._python.seen(pid)
        if self.uprobes is not None:
            self.uprobes.seen(pid)

    def _on_exec(self, pid: int) -> None:
        self._procs.invalidate(pid)
        self._targets.on_exec(pid)
        if self._go is not None:       # Go (#26): a new image, registered again (or
            self._go.exited(pid)       # not) at its next first sample (EV_NEW_PROC)
        if self._python is not None:                       # CPython (#22): a new image
            self._python.exec(pid)
        if self.uprobes is not None:
            self.uprobes.exec(pid)

    def _on_exit(self, pid: int) -> None:
        self._procs.mark_exited(pid)
        self._targets.on_exit(pid)
        if self._go is not None:                           # Go (#26)
            self._go.exited(pid)
        if self._python is not None:                       # CPython (#22)
            self._python.exited(pid)
        if self.uprobes is not None:
            self.uprobes.exited(pid)

    def _on_error(self, exc: BaseException) -> None:
        self._acct.errors.add(1)
        self._log.error("ebpf receiver: %s: %s", type(exc).__name__, exc,
                        exc_info=self._log.isEnabledFor(logging.DEBUG))

    # -- helpers ---------------------------------------------------------------------
    def _resource(self, unwinder: str) -> dict[str, str | int]:
        return {"host.name": socket.gethostname(), "os.type": "linux",
                "telegen.receiver": str(self._id), "telegen.unwinder": unwinder}
