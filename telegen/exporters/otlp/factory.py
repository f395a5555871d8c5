from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.exporters.otlp.config import OtlpExporterConfig


def make_factory(type_: str) -> Factory:
    return Factory(
        type=type_,
        kind=Kind.EXPORTER,
        config_type=OtlpExporterConfig,
        create=lazy("telegen.exporters.otlp.exporter:OtlpExporter"),
        schema="exporters/otlp.json",
        description="send OTLP profiles (v1development) over gRPC, queued (optionally on "
                    "disk) with retries; in traces pipelines, forward OTLP traces unchanged",
        signals=("profiles", "traces"),
    )


FACTORY = make_factory("otlp")
