from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.processors.spanlink.config import SpanLinkConfig

FACTORY = Factory(
    type="spanlink",
    kind=Kind.PROCESSOR,
    config_type=SpanLinkConfig,
    create=lazy("telegen.processors.spanlink.processor:SpanLinkProcessor"),
    schema="processors/spanlink.json",
    description="link samples (pid, tid, timestamps) to the innermost trace span active "
                "on their thread, after `delay`; normalise span_id/trace_id labels",
)
