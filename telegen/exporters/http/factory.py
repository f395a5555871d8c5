from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.exporters.http.config import HttpExporterConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.exporters.http.exporter import HttpExporter

    return HttpExporter(settings, config)


FACTORY = Factory(
    type="http",
    kind=Kind.EXPORTER,
    config_type=HttpExporterConfig,
    create=_create,
    schema="exporters/http.json",
    description="POST pprof to Pyroscope /ingest or to any URL, queued (optionally on disk) "
                "with retries",
)
