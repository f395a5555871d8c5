"""Component factories: every package under ``telegen/{receivers,processors,
exporters,extensions}/<type>/`` with a ``factory`` module exporting ``FACTORY``,
plus plug-ins registered under the ``telegen.components`` entry-point group."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from functools import cache
from importlib.metadata import entry_points

from telegen.component import Factory, Kind

log = logging.getLogger(__name__)

_PACKAGES = {
    Kind.RECEIVER: "telegen.receivers",
    Kind.PROCESSOR: "telegen.processors",
    Kind.EXPORTER: "telegen.exporters",
    Kind.EXTENSION: "telegen.extensions",
}


@cache
def factories() -> dict[tuple[Kind, str], Factory]:
    found: dict[tuple[Kind, str], Factory] = {}
    for kind, pkg_name in _PACKAGES.items():
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError:
            continue
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.ispkg:
                continue
            module = importlib.import_module(f"{pkg_name}.{info.name}.factory")
            factory: Factory = module.FACTORY
            if factory.kind is not kind or factory.type != info.name:
                raise RuntimeError(f"{module.__name__}: FACTORY must be a {kind.value} "
                                   f"named {info.name!r}")
            found[(kind, factory.type)] = factory
    for ep in entry_points(group="telegen.components"):
        try:
            factory = ep.load()
        except Exception as exc:  # a broken plug-in must not stop the agent
            log.warning("plug-in %s failed to load: %s", ep.name, exc)
            continue
        found.setdefault((factory.kind, factory.type), factory)
    return found


def get(kind: Kind, type_: str) -> Factory | None:
    return factories().get((kind, type_))


def types(kind: Kind) -> list[str]:
    return sorted(t for k, t in factories() if k is kind)
