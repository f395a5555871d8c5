from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.receivers.python.config import PythonReceiverConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.receivers.python.receiver import PythonReceiver

    return PythonReceiver(settings, config, next_consumer)


FACTORY = Factory(
    type="python",
    kind=Kind.RECEIVER,
    config_type=PythonReceiverConfig,
    create=_create,
    schema="receivers/python.json",
    description="sample CPython 3.8-3.13 processes from outside with py-spy: Python frames "
                "(module.function, file, line), thread ids and names; cpu (or wall) profiles",
)
