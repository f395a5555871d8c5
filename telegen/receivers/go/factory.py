from __future__ import annotations

from typing import Any

from telegen.component import Consumer, CreateSettings, Factory, Kind
from telegen.receivers.go.config import GoReceiverConfig


def _create(settings: CreateSettings, config: GoReceiverConfig,
            next_consumer: Consumer | None) -> Any:
    from telegen.receivers.go.receiver import GoReceiver

    assert next_consumer is not None
    return GoReceiver(settings, config, next_consumer)


FACTORY = Factory(
    type="go",
    kind=Kind.RECEIVER,
    config_type=GoReceiverConfig,
    create=_create,
    schema="receivers/go.json",
    description="scrape Go runtime profiles (cpu, heap, goroutine, mutex, block) from "
                "net/http/pprof endpoints, listed or discovered; cumulative ones as deltas",
)
