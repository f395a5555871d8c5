from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.processors.filter.config import FilterConfig

FACTORY = Factory(
    type="filter",
    kind=Kind.PROCESSOR,
    config_type=FilterConfig,
    create=lazy("telegen.processors.filter.filter:FilterProcessor"),
    schema="processors/filter.json",
    description="hide frames by glob (as pprof -hide); drop stacks below min_samples",
)
