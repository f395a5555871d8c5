from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.processors.filter.config import FilterConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.processors.filter.filter import FilterProcessor

    return FilterProcessor(settings, config, next_consumer)


FACTORY = Factory(
    type="filter",
    kind=Kind.PROCESSOR,
    config_type=FilterConfig,
    create=_create,
    schema="processors/filter.json",
    description="hide frames by glob (as pprof -hide); drop stacks below min_samples",
)
