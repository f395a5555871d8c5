"""Feeds a ``ui`` extension: the extension serves, this exporter delivers.

Extensions are not in pipelines (Collector semantics), so the web view gets
its windows through this exporter: at start it looks the extension up by id
(extensions start first) and fails fast when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegen.component import ComponentID, CreateSettings, Host
from telegen.exporters.ui.config import UiExporterConfig
from telegen.pdata import Profiles

if TYPE_CHECKING:
    from telegen.extensions.ui.store import Catalog


class UiExporter:
    mutates_data = False

    def __init__(self, settings: CreateSettings, config: UiExporterConfig) -> None:
        self._target = ComponentID.parse(config.extension)
        self._store: Catalog | None = None
        self._sent = settings.telemetry.counter("exporter_sent_samples")

    def start(self, host: Host) -> None:
        from telegen.extensions.ui.extension import UiExtension

        ext = host.extension(self._target)
        if not isinstance(ext, UiExtension):
            raise RuntimeError(f"extension {self._target} is not running: configure it under "
                               f"extensions: and list it in service::extensions")
        self._store = ext.store

    def shutdown(self, timeout_s: float = 30.0) -> None:
        pass

    def consume(self, profiles: Profiles) -> None:
        if self._store is None:
            raise RuntimeError("ui exporter used before start")
        self._store.add(profiles)
        self._sent.add(profiles.sample_count())
