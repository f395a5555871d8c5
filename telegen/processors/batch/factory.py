from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.processors.batch.config import BatchConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.processors.batch.batch import BatchProcessor

    return BatchProcessor(settings, config, next_consumer)


FACTORY = Factory(
    type="batch",
    kind=Kind.PROCESSOR,
    config_type=BatchConfig,
    create=_create,
    schema="processors/batch.json",
    description="merge profiles of one type and resource over `timeout`, aggregating stacks",
)
