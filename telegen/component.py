"""Component contracts: ids, kinds, factories, and the Component/Consumer protocols."""

from __future__ import annotations

import builtins
import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from telegen.pdata import Profiles
    from telegen.telemetry import ComponentTelemetry

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_INSTANCE_RE = re.compile(r"^[^\s/]+$")


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the whole user-facing message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class PermanentError(Exception):
    """Data that can never be consumed (bad input, rejected by a backend): drop it."""


class Kind(StrEnum):
    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"
    EXTENSION = "extension"

    @property
    def section(self) -> str:
        return self.value + "s"


@dataclass(frozen=True, order=True)
class ComponentID:
    """``type[/name]``, as in the Collector."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: object, path: str = "") -> ComponentID:
        if not isinstance(text, str) or not text:
            raise ConfigError(path, f"component id must be a non-empty string like "
                                    f"'type' or 'type/name' (got {text!r})")
        type_, sep, name = text.partition("/")
        if not _NAME_RE.match(type_):
            raise ConfigError(path, f"invalid component id {text!r}: the type must be lower "
                                    f"case letters, digits and '_', starting with a letter")
        if sep and not _INSTANCE_RE.match(name):
            raise ConfigError(path, f"invalid component id {text!r}: the name after '/' must "
                                    f"be non-empty with no spaces or '/'")
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


@runtime_checkable
class Consumer(Protocol):
    """Something profiles can be handed to. ``consume`` may raise: PermanentError
    means drop; any other exception means the caller may retry."""

    mutates_data: bool

    def consume(self, profiles: Profiles) -> None: ...


class Host(Protocol):
    """What a running component may ask of the service."""

    def report_error(self, component: ComponentID, error: BaseException) -> None: ...

    def extension(self, id: ComponentID) -> Component | None: ...


class Component(Protocol):
    def start(self, host: Host) -> None:
        """Return fast; the component owns (and names) its threads."""

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Idempotent. Flush buffered data downstream before returning."""


@dataclass
class CreateSettings:
    id: ComponentID
    kind: Kind
    telemetry: ComponentTelemetry
    logger: logging.Logger


# create(settings, config, next_consumer) -> Component
# (next_consumer is None for exporters and extensions)
CreateFunc = Callable[[CreateSettings, Any, "Consumer | None"], Any]


@dataclass(frozen=True)
class Factory:
    """How to make one component type. ``config_type`` is a dataclass whose field
    defaults are the only defaults; it may define ``validate()`` raising
    ValueError. ``schema`` names a JSON Schema under ``telegen/schema``."""

    type: str
    kind: Kind
    config_type: builtins.type[Any]
    create: CreateFunc
    schema: str
    description: str = ""
    stability: str = "alpha"
    # Pipeline signals the component handles: "profiles" (``consume``) and/or
    # "traces" (``consume_traces``, see ``telegen.ptrace``).
    signals: tuple[str, ...] = ("profiles",)


def lazy(target: str) -> CreateFunc:
    """A create function for ``"package.module:Class"`` that imports the module
    on first use, so listing or validating components loads no heavy code (BCC,
    gRPC...). Exporters and extensions are built as ``Class(settings, config)``,
    receivers and processors as ``Class(settings, config, next_consumer)``."""
    module_name, _, class_name = target.partition(":")

    def create(settings: CreateSettings, config: Any, next_consumer: Consumer | None) -> Any:
        cls = getattr(importlib.import_module(module_name), class_name)
        if settings.kind in (Kind.EXPORTER, Kind.EXTENSION):
            return cls(settings, config)
        return cls(settings, config, next_consumer)

    create.__qualname__ = f"lazy({target})"
    return create
