from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.exporters.console.config import ConsoleConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.exporters.console.console import ConsoleExporter

    return ConsoleExporter(settings, config)


FACTORY = Factory(
    type="console",
    kind=Kind.EXPORTER,
    config_type=ConsoleConfig,
    create=_create,
    schema="exporters/console.json",
    description="print a top-functions table (as `go tool pprof -top`) per profile type "
                "and window",
)
