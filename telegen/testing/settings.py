"""CreateSettings for building one component by hand in a test."""

from __future__ import annotations

import logging

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.telemetry import Registry


def create_settings(kind: Kind, cid: str, registry: Registry | None = None) -> CreateSettings:
    reg = registry or Registry()
    component = ComponentID.parse(cid)
    return CreateSettings(id=component, kind=kind,
                          telemetry=reg.for_component(kind.value, str(component)),
                          logger=logging.getLogger(f"telegen.{kind.value}.{component}"))


def counter(registry: Registry, name: str) -> float:
    """Sum of a counter or gauge over all label sets."""
    return sum(v for series, v in registry.snapshot().items()
               if series == name or series.startswith(name + "{"))
