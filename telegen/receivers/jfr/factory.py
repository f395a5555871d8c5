from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.receivers.jfr.config import JfrReceiverConfig

FACTORY = Factory(
    type="jfr",
    kind=Kind.RECEIVER,
    config_type=JfrReceiverConfig,
    create=lazy("telegen.receivers.jfr.receiver:JfrReceiver"),
    schema="receivers/jfr.json",
    description="record JVMs with JDK Flight Recorder (jcmd JFR.start/dump/stop) and read "
                "dropped .jfr files: cpu, alloc, mutex, park and gc profiles",
)
