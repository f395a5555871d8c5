from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.exporters.http.config import HttpExporterConfig

FACTORY = Factory(
    type="http",
    kind=Kind.EXPORTER,
    config_type=HttpExporterConfig,
    create=lazy("telegen.exporters.http.exporter:HttpExporter"),
    schema="exporters/http.json",
    description="POST pprof to Pyroscope /ingest or to any URL, queued (optionally on disk) "
                "with retries",
)
