from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.processors.batch.config import BatchConfig

FACTORY = Factory(
    type="batch",
    kind=Kind.PROCESSOR,
    config_type=BatchConfig,
    create=lazy("telegen.processors.batch.batch:BatchProcessor"),
    schema="processors/batch.json",
    description="merge profiles of one type and resource over `timeout`, aggregating stacks",
)
