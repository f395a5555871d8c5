"""A resolved scrape target: where to fetch and what to call the profiles."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from urllib.parse import urlsplit

from telegen.pdata import LabelValue


@dataclass(frozen=True)
class Target:
    url: str                                   # http://host:port/debug/pprof
    labels: tuple[tuple[str, str], ...] = ()   # extra resource attributes
    pid: int = 0                               # known for discovered targets
    start_ns: int = 0                          # process start (unix ns), 0: unknown
    process_name: str = ""
    executable: str = ""
    container_id: str = ""

    @property
    def identity(self) -> Hashable | None:
        """What changes when the process behind the endpoint restarts (None: unknown)."""
        return (self.pid, self.start_ns) if self.pid else None

    @property
    def host_port(self) -> str:
        return urlsplit(self.url).netloc

    def resource(self) -> dict[str, LabelValue]:
        """Resource attributes of every profile scraped from this target."""
        attrs: dict[str, LabelValue] = {}
        labels = dict(self.labels)
        attrs["service.name"] = labels.pop("service.name", "") or self.process_name \
            or self.host_port
        if self.pid:
            attrs["process.pid"] = self.pid
        if self.executable:
            attrs["process.executable.path"] = self.executable
        if self.container_id:
            attrs["container.id"] = self.container_id
        attrs["telegen.target"] = self.url
        attrs.update(labels)
        return attrs
