"""Exporter ``ui``: hand each window to a ``ui`` extension's in-memory store."""
from __future__ import annotations

from dataclasses import dataclass

from telegen.extensions.ui.config import ui_extension_id


@dataclass
class UiExporterConfig:
    # The id of the `ui` extension (under `extensions:` and in service.extensions).
    extension: str = "ui"

    def validate(self) -> None:
        ui_extension_id(self.extension, "extension")
