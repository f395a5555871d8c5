from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.receivers.pprof.config import PprofReceiverConfig

FACTORY = Factory(
    type="pprof",
    kind=Kind.RECEIVER,
    config_type=PprofReceiverConfig,
    create=lazy("telegen.receivers.pprof.receiver:PprofReceiver"),
    schema="receivers/pprof.json",
    description="read pprof files (gzipped or raw) matching glob patterns, once or watching "
                "for new ones",
)
