from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.receivers.ebpf.config import EbpfConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.receivers.ebpf.receiver import EbpfReceiver

    return EbpfReceiver(settings, config, next_consumer)


FACTORY = Factory(
    type="ebpf",
    kind=Kind.RECEIVER,
    config_type=EbpfConfig,
    create=_create,
    schema="receivers/ebpf.json",
    description="CPU (perf_event cpu-clock), off-CPU (sched_switch), memory (allocator "
                "uprobes) and lock-contention (futex) profiles of host processes, stacks "
                "counted in the kernel (BCC)",
)
