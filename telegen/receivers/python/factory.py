from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.receivers.python.config import PythonReceiverConfig

FACTORY = Factory(
    type="python",
    kind=Kind.RECEIVER,
    config_type=PythonReceiverConfig,
    create=lazy("telegen.receivers.python.receiver:PythonReceiver"),
    schema="receivers/python.json",
    description="sample CPython 3.8-3.13 processes from outside with py-spy: Python frames "
                "(module.function, file, line), thread ids and names; cpu (or wall) profiles",
)
