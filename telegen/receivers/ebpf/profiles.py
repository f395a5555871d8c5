"""One window's raw counts to pdata profiles (``cpu`` and ``off_cpu``)."""

from __future__ import annotations

from collections.abc import Callable

from telegen.pdata import CPU, OFF_CPU, Frame, Profile, ValueType, make_labels
from telegen.procinfo import ProcessCache
from telegen.procinfo.identity import IdentityCache, host_attributes
from telegen.receivers.ebpf.bpf_loader import STACK_DEPTH
from telegen.receivers.ebpf.frames import build_stack
from telegen.receivers.ebpf.keys import KEY_FP_FALLBACK, RawKey
from telegen.receivers.ebpf.stacks import TRUNCATED_MARK
from telegen.receivers.ebpf.window import MapReader, WindowData
from telegen.semconv import PROCESS_COMMAND_LINE, PROCESS_PID, THREAD_ID, THREAD_NAME
from telegen.untrusted.text import printable

NS = 1_000_000_000


MAX_COMMAND_LINE = 512      # characters of process.command_line (option command_line)


class ProfileBuilder:
    def __init__(self, *, reader: MapReader, processes: ProcessCache, sample_rate: int,
                 include_kernel: bool, resource: dict[str, str | int],
                 count_stack_problem: Callable[[str, int], None],
                 wanted: Callable[[int], bool] = lambda pid: True,
                 unwind_outcome: Callable[[int], str] | None = None,
                 count_unwind: Callable[[str, str, int], None] | None = None,
                 command_line: bool = False) -> None:
        self._reader = reader
        self._command_line = command_line
        processes.on_release(self.forget)
        self._procs = processes
        self._period = NS // sample_rate
        self._include_kernel = include_kernel
        # host.id (machine id) next to the receiver's host.name and os.type
        self._resource = {**host_attributes(), **resource}
        self.resource = self._resource
        self._identity = IdentityCache()
        self._problem = count_stack_problem
        self._wanted = wanted
        # CFI unwinding: (snapshot id) -> full/truncated/error, counted per sample
        self._outcome = unwind_outcome
        self._count_unwind = count_unwind
        self._stack_memo: dict[tuple[int, int, int, int, int],
                               tuple[tuple[Frame, ...], str, str]] = {}
        # CFI: every copy has its own snapshot id, but most resolve to a stack
        # seen before; frames are built once per distinct address list
        # (pid, addresses...) -> frames: kept over two windows (a steady
        # workload's stacks come back every window); a process's entries go
        # when it exits (forget)
        self._frames_memo: dict[tuple, tuple[Frame, ...]] = {}   # type: ignore[type-arg]
        self._frames_old: dict[tuple, tuple[Frame, ...]] = {}   # type: ignore[type-arg]
        self._label_memo: dict[tuple[int, int, str], tuple] = {}   # type: ignore[type-arg]
        # Go (#26): a sample's go_labels id -> its goroutine's pprof labels
        self.go_labels: Callable[[int], tuple[tuple[str, str], ...]] | None = None
        # CPython (#22): (key, native frames, samples) -> frames with the sample's
        # Python frames merged in (receivers/ebpf/cpython.py)
        self.python_frames: Callable[[RawKey, tuple[Frame, ...], int],
                                     tuple[Frame, ...]] | None = None

    def cpu(self, w: WindowData, stamps: dict[RawKey, list[int]]) -> Profile:
        p = Profile(name="cpu", sample_types=CPU, period_type=ValueType("cpu", "nanoseconds"),
                    period=self._period, start_ns=w.start_ns,
                    duration_ns=w.end_ns - w.start_ns, resource=self._resource,
                    default_sample_type="cpu")
        for key, count in w.cpu:
            if not self._wanted(key.pid):
                continue
            p.add(self._stack(key, count), [count, count * self._period], self._labels(key),
                  stamps.get(key, ()))
        return p

    def off_cpu(self, w: WindowData, stamps: dict[RawKey, list[int]],
                threshold_ns: int) -> Profile:
        p = Profile(name="off_cpu", sample_types=OFF_CPU,
                    period_type=ValueType("off_cpu", "nanoseconds"), period=1,
                    start_ns=w.start_ns, duration_ns=w.end_ns - w.start_ns,
                    resource=self._resource, default_sample_type="off_cpu")
        for key, ns, count in w.off_cpu:
            if not self._wanted(key.pid):
                continue
            p.add(self._stack(key, count), [count, ns], self._labels(key),
                  stamps.get(key, ()))
        below = w.stats.get("offcpu_below_threshold", 0)
        if threshold_ns and below:
            p.comments.append(
                f"off_cpu_threshold {threshold_ns / 1e6:g}ms: {below} shorter intervals "
                f"({w.stats.get('offcpu_below_ns', 0) / 1e6:.1f}ms in all) not shown")
        return p

    # -- shared with the memory and lock profiles (memory.py, locks.py) --------------
    def frames(self, key: RawKey, weight: int) -> tuple[Frame, ...]:
        """Frames of ``key``'s stack (memoized per window); problems counted x weight."""
        return self._stack(key, weight)

    def labels(self, key: RawKey) -> tuple:   # type: ignore[type-arg]
        return self._labels(key)

    def wanted(self, pid: int) -> bool:
        return self._wanted(pid)

    def forget(self, pids: list[int]) -> None:
        """Drop the labels of processes that exited (ProcessCache.on_release)."""
        gone = set(pids)
        for memo in (self._label_memo, self._frames_memo, self._frames_old):
            for key in [k for k in memo if k[0] in gone]:
                memo.pop(key, None)

    def reset(self) -> None:
        """Forget per-window memos (stack ids are reused across windows)."""
        self._stack_memo.clear()
        self._frames_old, self._frames_memo = self._frames_memo, {}
        if len(self._label_memo) > 65536:
            self._label_memo.clear()

    def _labels(self, key: RawKey) -> tuple:   # type: ignore[type-arg]
        memo_key = (key.pid, key.tid, key.comm)
        labels = self._label_memo.get(memo_key)
        if labels is None:
            info = self._procs.get(key.pid)
            # who (process, container, pod, service: procinfo.identity) and which
            # thread; the process's attributes move to the resource when the
            # profile is split per process (telegen.semconv.split_by_process)
            who: dict[str, str | int] = {PROCESS_PID: key.pid} if info is None else \
                self._identity.attributes(key.pid, info, info.exe)
            if self._command_line and info is not None and info.cmdline:
                who[PROCESS_COMMAND_LINE] = printable(" ".join(info.cmdline))[:MAX_COMMAND_LINE]
            labels = make_labels(**{**who, THREAD_ID: key.tid, THREAD_NAME: key.comm})
            if info is not None:     # do not memoize a miss: metadata may come later
                self._label_memo[memo_key] = labels
        if key.go_labels and self.go_labels is not None:   # Go (#26): pprof labels
            labels = tuple(sorted((*labels, *self.go_labels(key.go_labels))))
        return labels

    def _stack(self, key: RawKey, samples: int) -> tuple[Frame, ...]:
        """Frames of ``key``'s stack; stack problems are counted per sample."""
        memo_key = (key.pid, key.stack_seq, key.user_stack, key.kernel_stack, key.flags)
        hit = self._stack_memo.get(memo_key)
        if hit is None:
            hit = self._build(key)
            self._stack_memo[memo_key] = hit
        stack, problem, outcome = hit
        if key.py_stack and self.python_frames is not None:    # CPython (#22)
            stack = self.python_frames(key, stack, samples)
        if problem:
            self._problem(problem, samples)
        if outcome and self._count_unwind is not None:
            self._count_unwind(key.comm, outcome, samples)
        return stack

    def _build(self, key: RawKey) -> tuple[tuple[Frame, ...], str, str]:
        user, problem = self._reader.user_stack(key)
        if problem == "none":
            problem = ""
        truncated = user is not None and len(user) >= STACK_DEPTH
        outcome = self._outcome(key.user_stack) if self._outcome is not None else ""
        if user and user[-1] == TRUNCATED_MARK:       # the CFI unwinder stopped early
            user, truncated = user[:-1], True
        if key.flags & KEY_FP_FALLBACK:               # copy failed: frame pointers only
            truncated, outcome = True, "truncated"
        if truncated:
            problem = "truncated"
        kernel = self._reader.kernel_stack(key) if self._include_kernel else ()
        pid = key.pid
        memo_key = (pid, tuple(kernel), None if user is None else tuple(user),
                    key.user_mode, truncated)
        stack = self._frames_memo.get(memo_key)
        if stack is None:
            stack = self._frames_old.get(memo_key)
            if stack is not None:
                self._frames_memo[memo_key] = stack
        if stack is None:
            procs = self._procs
            info = procs.get(pid)     # once per stack: the cache's lock, not once a frame

            def find(addr: int):   # type: ignore[no-untyped-def]
                m = info.find_mapping(addr) if info is not None else None
                # not in the maps read so far (dlopen, JIT): the cache re-reads them
                return m if m is not None else procs.find_mapping(pid, addr)

            stack = build_stack(kernel=kernel, user=user, user_mode=key.user_mode,
                                find_mapping=find, truncated=truncated)
            self._frames_memo[memo_key] = stack
        return stack, problem, outcome
