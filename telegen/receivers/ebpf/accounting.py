"""The receiver's counters (settings.telemetry), fed from BPF stats deltas."""

from __future__ import annotations

from telegen.telemetry import ComponentTelemetry

_STACK_ERRORS = {   # BPF stat -> (stack, kind)
    "ustack_eexist": ("user", "collision"), "ustack_enomem": ("user", "map_full"),
    "ustack_efault": ("user", "efault"), "ustack_other": ("user", "other"),
    "kstack_eexist": ("kernel", "collision"), "kstack_enomem": ("kernel", "map_full"),
    "kstack_efault": ("kernel", "efault"), "kstack_other": ("kernel", "other"),
}


class Accounting:
    def __init__(self, telemetry: ComponentTelemetry) -> None:
        self._t = telemetry
        self.accepted = {name: telemetry.counter("receiver_accepted_samples", profile=name)
                         for name in ("cpu", "off_cpu", "alloc", "inuse", "mutex")}
        self.truncated = telemetry.counter("ebpf_truncated_stacks")
        self.processes = telemetry.gauge("ebpf_processes_tracked")
        self.targets = telemetry.gauge("ebpf_targeted_processes")
        self.errors = telemetry.counter("ebpf_errors")
        self.below = telemetry.counter("ebpf_offcpu_below_threshold")
        self.windows = telemetry.counter("ebpf_windows")

    def stack_error(self, kind: str, n: int = 1, stack: str = "user") -> None:
        self._t.counter("ebpf_stack_errors", type=kind, stack=stack).add(n)

    def map_full(self, map_name: str, n: int = 1) -> None:
        self._t.counter("ebpf_map_full", map=map_name).add(n)

    def stack_problem(self, problem: str, n: int) -> None:
        """From the profile builder: "truncated", "failed" (already counted in
        BPF by errno), "expired" (stack gone before it was read)."""
        if problem == "truncated":
            self.truncated.add(n)
        elif problem == "expired":
            self.stack_error("expired", n)

    def unwound(self, process: str, outcome: str, n: int) -> None:
        """CFI unwinding, per process (comm) and sample: full / truncated / error."""
        name = {"full": "ebpf_unwind_full", "truncated": "ebpf_unwind_truncated"}.get(
            outcome, "ebpf_unwind_errors")
        self._t.counter(name, process=process).add(n)
        if outcome == "truncated":
            self.truncated.add(n)

    def window_stats(self, stats: dict[str, int]) -> None:
        for stat in ("usnap_emitted", "usnap_deduped", "usnap_throttled", "usnap_lost",
                     "usnap_fault", "usnap_skipped"):
            if stats.get(stat):
                self._t.counter("ebpf_unwind_copies", result=stat[6:]).add(stats[stat])
        for stat, (stack, kind) in _STACK_ERRORS.items():
            n = stats.get(stat, 0)
            if n:
                self.stack_error(kind, n, stack)
                if kind == "map_full":
                    self.map_full("stacks", n)
        if stats.get("counts_full"):
            self.map_full("counts", stats["counts_full"])
        if stats.get("starts_full"):
            self.map_full("off_cpu_starts", stats["starts_full"])
        if stats.get("events_lost"):
            self._t.counter("ebpf_lost_events", reason="event_ring_full",
                            profile="events").add(stats["events_lost"])
        if stats.get("spilled"):
            self._t.counter("ebpf_spilled_samples").add(stats["spilled"])
        if stats.get("offcpu_below_threshold"):
            self.below.add(stats["offcpu_below_threshold"])
        self.windows.add(1)
