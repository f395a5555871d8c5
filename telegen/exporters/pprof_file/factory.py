from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.exporters.pprof_file.config import PprofFileConfig

FACTORY = Factory(
    type="pprof_file",
    kind=Kind.EXPORTER,
    config_type=PprofFileConfig,
    create=lazy("telegen.exporters.pprof_file.exporter:PprofFileExporter"),
    schema="exporters/pprof_file.json",
    description="write one gzipped pprof file per profile type and window, atomically, "
                "with file-count / byte retention",
)
