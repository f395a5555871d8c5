from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.receivers.ebpf.config import EbpfConfig

FACTORY = Factory(
    type="ebpf",
    kind=Kind.RECEIVER,
    config_type=EbpfConfig,
    create=lazy("telegen.receivers.ebpf.receiver:EbpfReceiver"),
    schema="receivers/ebpf.json",
    description="CPU (perf_event cpu-clock), off-CPU (sched_switch), memory (allocator "
                "uprobes) and lock-contention (futex) profiles of host processes, stacks "
                "counted in the kernel (BCC)",
)
