"""Exporter ``ui``: hand each window to a ``ui`` extension's in-memory store."""
from __future__ import annotations

from dataclasses import dataclass

from telegen.component import ComponentID


@dataclass
class UiExporterConfig:
    # The id of the `ui` extension (under `extensions:` and in service.extensions).
    extension: str = "ui"

    def validate(self) -> None:
        try:
            cid = ComponentID.parse(self.extension)
        except Exception as exc:
            raise ValueError(f"extension: {exc}") from None
        if cid.type != "ui":
            raise ValueError(f"extension must name a `ui` extension (got {self.extension!r})")
