from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.receivers.pprof.config import PprofReceiverConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.receivers.pprof.receiver import PprofReceiver

    return PprofReceiver(settings, config, next_consumer)


FACTORY = Factory(
    type="pprof",
    kind=Kind.RECEIVER,
    config_type=PprofReceiverConfig,
    create=_create,
    schema="receivers/pprof.json",
    description="read pprof files (gzipped or raw) matching glob patterns, once or watching "
                "for new ones",
)
