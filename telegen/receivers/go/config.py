"""Configuration of the ``go`` receiver.

Profile switches are top-level booleans named as in the seed document and the
``ebpf`` receiver (``cpu``, ``memory``, ``goroutine``, ``mutex``, ``block``).
Defaults follow the seed: CPU on, everything else off, so a Go-specific
profile is collected only when asked for (the seed's Go snippet turns on
``goroutine``, ``mutex`` and ``block``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PATH = "/debug/pprof"
SWITCHES = ("cpu", "memory", "goroutine", "mutex", "block")


@dataclass
class GoTarget:
    # ``host:port`` or ``http://host:port[/prefix]``; the prefix defaults to /debug/pprof.
    endpoint: str = ""
    # Extra resource attributes for this target's profiles (``service.name`` names it).
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """``http://host:port/debug/pprof`` (no trailing slash)."""
        return normalize_endpoint(self.endpoint)


def normalize_endpoint(endpoint: str) -> str:
    text = endpoint.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint {endpoint!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"endpoint {endpoint!r}: expected host:port, e.g. 127.0.0.1:6060")
    try:
        parts.port   # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError(f"endpoint {endpoint!r}: invalid port") from None
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint {endpoint!r}: no query or fragment allowed")
    path = parts.path.rstrip("/") or DEFAULT_PATH
    return f"{parts.scheme}://{parts.netloc}{path}"


@dataclass
class GoReceiverConfig:
    # Services to scrape: [{endpoint: "127.0.0.1:6060", labels: {service.name: api}}].
    targets: list[GoTarget] = field(default_factory=list)
    # Find Go processes on this host listening on loopback/any address whose
    # port answers /debug/pprof/, rescanned every interval.
    discovery: bool = False
    # One scrape of every target per interval; cumulative profiles become
    # per-interval deltas.
    interval: float = field(default=10.0, metadata={"duration": True})
    # CPU profile over cpu_seconds (/debug/pprof/profile). Off when built from the
    # seed's agent.profiling block, where the ebpf receiver samples Go programs' CPU.
    cpu: bool = True
    # Heap (/debug/pprof/heap): in-use space as a snapshot, allocations as deltas.
    memory: bool = False
    # Goroutine stacks and counts (/debug/pprof/goroutine), a snapshot.
    goroutine: bool = False
    # Lock contention (/debug/pprof/mutex) as deltas; the program must enable it
    # with runtime.SetMutexProfileFraction.
    mutex: bool = False
    # Blocking on channels, locks, select (/debug/pprof/block) as deltas; the
    # program must enable it with runtime.SetBlockProfileRate.
    block: bool = False
    # CPU profile window; 0 means the whole interval. Go takes whole seconds,
    # so it is rounded down and capped at the interval minus a margin of
    # min(1s, interval/10), leaving time to fetch before the next one starts.
    cpu_seconds: float = field(default=0.0, metadata={"duration": True})
    # Per request (a CPU request may take cpu_seconds longer).
    timeout: float = field(default=5.0, metadata={"duration": True})
    # A larger (decompressed or not) response body is refused.
    max_body_bytes: int = 64 << 20
    # Requests in flight at once, per lane (CPU windows and the other profiles).
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        self.targets = [t if isinstance(t, GoTarget) else _target(t) for t in self.targets]

    def validate(self) -> None:
        if not self.targets and not self.discovery:
            raise ValueError("nothing to scrape: list targets (e.g. targets: [{endpoint: "
                             "\"127.0.0.1:6060\"}]) or set discovery: true")
        seen: set[str] = set()
        for i, t in enumerate(self.targets):
            if not t.endpoint.strip():
                raise ValueError(f"targets[{i}]: endpoint must not be empty")
            try:
                url = t.base_url
            except ValueError as exc:
                raise ValueError(f"targets[{i}]: {exc}") from None
            if url in seen:
                raise ValueError(f"targets[{i}]: endpoint {t.endpoint!r} is listed twice")
            seen.add(url)
        if not any(getattr(self, s) for s in SWITCHES):
            raise ValueError("nothing to collect: enable at least one of "
                             + ", ".join(SWITCHES))
        if self.interval < 1.0:
            raise ValueError(f"interval must be at least 1s (got {self.interval}s)")
        if self.cpu and self.interval < 2.0:
            raise ValueError(f"interval must be at least 2s when cpu is on (got "
                             f"{self.interval}s): Go's CPU window is whole seconds")
        if self.cpu_seconds and self.cpu_seconds < 1.0:
            raise ValueError(f"cpu_seconds must be at least 1s (got {self.cpu_seconds}s)")
        if self.cpu_seconds > self.interval:
            raise ValueError(f"cpu_seconds ({self.cpu_seconds}s) must not exceed interval "
                             f"({self.interval}s)")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 (got {self.timeout}s)")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024 (got {self.max_body_bytes})")
        if not 1 <= self.max_concurrency <= 256:
            raise ValueError(f"max_concurrency must be between 1 and 256 "
                             f"(got {self.max_concurrency})")

    def cpu_window_seconds(self) -> int:
        """The ``seconds`` sent to /debug/pprof/profile."""
        cap = self.interval - min(1.0, self.interval / 10)
        want = self.cpu_seconds or self.interval
        return max(1, math.floor(min(want, cap)))


def _target(raw: Any) -> GoTarget:
    if isinstance(raw, str):
        return GoTarget(endpoint=raw)
    if isinstance(raw, dict):
        labels = raw.get("labels") or {}
        return GoTarget(endpoint=str(raw.get("endpoint", "")),
                        labels={str(k): str(v) for k, v in labels.items()})
    raise ValueError(f"target must be a mapping with endpoint and labels (got {raw!r})")
