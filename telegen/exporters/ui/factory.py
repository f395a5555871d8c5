from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.exporters.ui.config import UiExporterConfig

FACTORY = Factory(
    type="ui",
    kind=Kind.EXPORTER,
    config_type=UiExporterConfig,
    create=lazy("telegen.exporters.ui.exporter:UiExporter"),
    schema="exporters/ui.json",
    description="keep each window in memory for the `ui` extension's web view",
)
