from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.exporters.pprof_file.config import PprofFileConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.exporters.pprof_file.exporter import PprofFileExporter

    return PprofFileExporter(settings, config)


FACTORY = Factory(
    type="pprof_file",
    kind=Kind.EXPORTER,
    config_type=PprofFileConfig,
    create=_create,
    schema="exporters/pprof_file.json",
    description="write one gzipped pprof file per profile type and window, atomically, "
                "with file-count / byte retention",
)
