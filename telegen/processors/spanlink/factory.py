from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.processors.spanlink.config import SpanLinkConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.processors.spanlink.processor import SpanLinkProcessor

    return SpanLinkProcessor(settings, config, next_consumer)


FACTORY = Factory(
    type="spanlink",
    kind=Kind.PROCESSOR,
    config_type=SpanLinkConfig,
    create=_create,
    schema="processors/spanlink.json",
    description="link samples (pid, tid, timestamps) to the innermost trace span active "
                "on their thread, after `delay`; normalise span_id/trace_id labels",
)
