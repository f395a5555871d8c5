from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.extensions.spanstore.config import SpanStoreConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.extensions.spanstore.extension import SpanStore

    return SpanStore(settings, config)


FACTORY = Factory(
    type="spanstore",
    kind=Kind.EXTENSION,
    config_type=SpanStoreConfig,
    create=_create,
    schema="extensions/spanstore.json",
    description="recent spans (from the otlp receiver) for spanlink, and a loopback "
                "per-span view: /spans/<span_id> table + flame graph, /profile as pprof",
)
