"""A resolved scrape target: where to fetch and what to call the profiles."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from urllib.parse import urlsplit

from telegen.pdata import LabelValue
from telegen.procinfo.identity import IdentityCache, host_attributes
from telegen.semconv import CONTAINER_ID, SERVICE_NAME

# one read of /proc/PID/{environ,cgroup,status} per process (pid, start time)
_IDENTITY = IdentityCache(1024)


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
        if self.pid:       # a process of this host: the host, then who it is
            attrs.update(host_attributes())   # (procinfo.identity: executable, container…)
            attrs.update(_IDENTITY.attributes(self.pid, (self.pid, self.start_ns),
                                              self.executable or None))
        if self.container_id:
            attrs[CONTAINER_ID] = self.container_id
        # service.name: the config's label, else the process's OTEL_SERVICE_NAME;
        # a local process's fallbacks (Kubernetes container name, executable
        # name) are decided where it is sent (telegen.semconv.service_name); a
        # remote endpoint is named after itself
        name = labels.pop(SERVICE_NAME, "") or attrs.get(SERVICE_NAME) or \
            ("" if self.pid else self.process_name or self.host_port)
        attrs.pop(SERVICE_NAME, None)
        if name:
            attrs[SERVICE_NAME] = name
        attrs["telegen.target"] = self.url
        attrs.update(labels)
        return attrs
