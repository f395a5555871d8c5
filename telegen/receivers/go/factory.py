from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.receivers.go.config import GoReceiverConfig

FACTORY = Factory(
    type="go",
    kind=Kind.RECEIVER,
    config_type=GoReceiverConfig,
    create=lazy("telegen.receivers.go.receiver:GoReceiver"),
    schema="receivers/go.json",
    description="scrape Go runtime profiles (cpu, heap, goroutine, mutex, block) from "
                "net/http/pprof endpoints, listed or discovered; cumulative ones as deltas",
)
