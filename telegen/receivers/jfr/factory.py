from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.receivers.jfr.config import JfrReceiverConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.receivers.jfr.receiver import JfrReceiver

    return JfrReceiver(settings, config, next_consumer)


FACTORY = Factory(
    type="jfr",
    kind=Kind.RECEIVER,
    config_type=JfrReceiverConfig,
    create=_create,
    schema="receivers/jfr.json",
    description="record JVMs with JDK Flight Recorder (jcmd JFR.start/dump/stop) and read "
                "dropped .jfr files: cpu, alloc, mutex, park and gc profiles",
)
