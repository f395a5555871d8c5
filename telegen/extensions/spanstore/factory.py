from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.extensions.spanstore.config import SpanStoreConfig

FACTORY = Factory(
    type="spanstore",
    kind=Kind.EXTENSION,
    config_type=SpanStoreConfig,
    create=lazy("telegen.extensions.spanstore.extension:SpanStore"),
    schema="extensions/spanstore.json",
    description="recent spans (from the otlp receiver) for spanlink, and a loopback "
                "per-span view: /spans/<span_id> table + flame graph, /profile as pprof",
)
