from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.exporters.ui.config import UiExporterConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.exporters.ui.exporter import UiExporter

    return UiExporter(settings, config)


FACTORY = Factory(
    type="ui",
    kind=Kind.EXPORTER,
    config_type=UiExporterConfig,
    create=_create,
    schema="exporters/ui.json",
    description="keep each window in memory for the `ui` extension's web view",
)
