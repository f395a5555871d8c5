from __future__ import annotations

from telegen.component import Factory, Kind
from telegen.extensions.ui.config import UiConfig


def _create(settings, config, next_consumer):  # type: ignore[no-untyped-def]
    from telegen.extensions.ui.extension import UiExtension

    return UiExtension(settings, config)


FACTORY = Factory(
    type="ui",
    kind=Kind.EXTENSION,
    config_type=UiConfig,
    create=_create,
    schema="extensions/ui.json",
    description="local web view (127.0.0.1): flame graphs, top tables and diffs of recent "
                "windows (fed by a `ui` exporter) and of pprof_file directories",
)
