"""Extension ``ui``: a local web view of recent windows and pprof_file directories."""
from __future__ import annotations

from dataclasses import dataclass, field

from telegen.component import ComponentID
from telegen.helpers.httphosts import is_loopback


def ui_extension_id(text: str, key: str) -> ComponentID:
    """``text`` as the id of a `ui` extension (``ui`` or ``ui/name``) for the
    setting ``key`` of another component; ValueError otherwise."""
    try:
        cid = ComponentID.parse(text)
    except Exception as exc:
        raise ValueError(f"{key}: {exc}") from None
    if cid.type != "ui":
        raise ValueError(f"{key} must name a `ui` extension (got {text!r})")
    return cid


@dataclass
class UiConfig:
    # host:port to serve on; loopback only unless allow_remote (the pages show
    # command lines, code paths and function names). Port 0 picks a free port.
    endpoint: str = "127.0.0.1:4041"
    # Serve on a non-loopback endpoint (a warning at start): anyone who can
    # reach it reads every profile. Off by default.
    allow_remote: bool = False
    # Host names browsers may use for the ui besides loopback, the endpoint's
    # host and (off loopback) IP literals; any other Host: gets 421 (DNS
    # rebinding). E.g. [profiler.internal.example].
    allowed_hosts: list[str] = field(default_factory=list)
    # pprof_file directories to browse (read-only), e.g. ["./profiles"].
    directories: list[str] = field(default_factory=list)
    # Recent windows kept in memory (fed by a `ui` exporter); oldest dropped first.
    max_windows: int = 360
    # Server-side pruning: frames below this fraction of the total are hidden
    # (and counted on the page).
    min_fraction: float = 0.0001
    # Link target of a span id; {span_id} is replaced (the per-span view).
    span_url: str = "/spans/{span_id}"

    def validate(self) -> None:
        host, sep, port = self.endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"endpoint must be host:port, e.g. 127.0.0.1:4041 "
                             f"(got {self.endpoint!r})")
        if not is_loopback(host) and not self.allow_remote:
            raise ValueError(f"endpoint {self.endpoint!r} is not a loopback address: the ui "
                             f"shows command lines and code paths to whoever reaches it; use "
                             f"127.0.0.1:{port}, or set allow_remote: true")
        for name in self.allowed_hosts:
            if not name or "/" in name or " " in name:
                raise ValueError(f"allowed_hosts: {name!r} is not a host name")
        if self.max_windows < 1:
            raise ValueError(f"max_windows must be >= 1 (got {self.max_windows})")
        if not 0 <= self.min_fraction < 0.5:
            raise ValueError(f"min_fraction must be in [0, 0.5) (got {self.min_fraction})")
        if "{span_id}" not in self.span_url:
            raise ValueError(f"span_url must contain {{span_id}} (got {self.span_url!r})")
        for d in self.directories:
            if not d:
                raise ValueError("directories: empty path; remove it")
