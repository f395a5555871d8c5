from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.exporters.console.config import ConsoleConfig

FACTORY = Factory(
    type="console",
    kind=Kind.EXPORTER,
    config_type=ConsoleConfig,
    create=lazy("telegen.exporters.console.console:ConsoleExporter"),
    schema="exporters/console.json",
    description="print a top-functions table (as `go tool pprof -top`) per profile type "
                "and window",
)
