from __future__ import annotations

from telegen.component import Factory, Kind, lazy
from telegen.extensions.ui.config import UiConfig

FACTORY = Factory(
    type="ui",
    kind=Kind.EXTENSION,
    config_type=UiConfig,
    create=lazy("telegen.extensions.ui.extension:UiExtension"),
    schema="extensions/ui.json",
    description="local web view (127.0.0.1): flame graphs, top tables and diffs of recent "
                "windows (fed by a `ui` exporter) and of pprof_file directories",
)
