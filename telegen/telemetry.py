"""The agent's own counters: per component, logged at shutdown and served as
Prometheus text on ``service.telemetry.metrics.address`` when enabled."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import TypeVar

from telegen.helpers.httpserver import BackgroundHTTPServer, reply
from telegen.untrusted import Refusals

log = logging.getLogger("telegen.telemetry")
_T = TypeVar("_T", "Counter", "Gauge")


class Counter:
    __slots__ = ("value", "_lock")

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n


class Gauge:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, v: float) -> None:
        self.value = v


class ComponentTelemetry:
    """Counters of one component; names follow Collector metric names."""

    def __init__(self, registry: Registry, kind: str, component: str) -> None:
        self._registry = registry
        self.kind = kind
        self.component = component

    def counter(self, name: str, **labels: str) -> Counter:
        return self._registry.counter(name, kind=self.kind, component=self.component, **labels)

    def gauge(self, name: str, **labels: str) -> Gauge:
        return self._registry.gauge(name, kind=self.kind, component=self.component, **labels)


Key = tuple[str, tuple[tuple[str, str], ...]]

# Series per metric name beyond which new label sets share one overflow series
# (the OpenTelemetry SDK's cardinality limit): a label fed by what runs on the
# host (a process name, a reason read from input) cannot grow the agent for
# ever (#21). The overflow series keeps the component's labels and carries
# otel.metric.overflow="true" (in Prometheus spelling).
MAX_SERIES_PER_METRIC = 1000
OVERFLOW_LABEL = "otel_metric_overflow"
_IDENTIFYING = ("kind", "component", "pipeline")


class Registry:
    def __init__(self, max_series_per_metric: int = MAX_SERIES_PER_METRIC) -> None:
        self._counters: dict[Key, Counter] = {}
        self._gauges: dict[Key, Gauge] = {}
        self._series: dict[str, int] = {}     # metric name -> its series (counters + gauges)
        self._max_series = max_series_per_metric
        self._lock = threading.Lock()

    def for_component(self, kind: str, component: str) -> ComponentTelemetry:
        return ComponentTelemetry(self, kind, component)

    def counter(self, name: str, **labels: str) -> Counter:
        with self._lock:
            return self._get(self._counters, name, labels, Counter)

    def gauge(self, name: str, **labels: str) -> Gauge:
        with self._lock:
            return self._get(self._gauges, name, labels, Gauge)

    def _get(self, table: dict[Key, _T], name: str, labels: dict[str, str],
             make: Callable[[], _T]) -> _T:
        key = (name, tuple(sorted(labels.items())))
        found = table.get(key)
        if found is not None:
            return found
        if self._series.get(name, 0) >= self._max_series:
            kept = {k: v for k, v in labels.items() if k in _IDENTIFYING}
            key = (name, tuple(sorted({**kept, OVERFLOW_LABEL: "true"}.items())))
            found = table.get(key)
            if found is not None:
                return found
        self._series[name] = self._series.get(name, 0) + 1
        table[key] = found = make()
        return found

    def series_count(self) -> int:
        """How many series the registry holds (counters and gauges)."""
        with self._lock:
            return len(self._counters) + len(self._gauges)

    def snapshot(self) -> dict[str, float]:
        """``name{label="v",...}`` → value, for logs and tests."""
        with self._lock:
            items: list[tuple[Key, float]] = [(k, c.value) for k, c in self._counters.items()]
            items += [(k, g.value) for k, g in self._gauges.items()]
        return {_series(name, labels): v for (name, labels), v in sorted(items)}

    def prometheus_text(self) -> str:
        lines: list[str] = []
        with self._lock:
            groups: list[tuple[str, list[tuple[Key, float]]]] = [
                ("counter", [(k, c.value) for k, c in self._counters.items()]),
                ("gauge", [(k, g.value) for k, g in self._gauges.items()])]
            seen: set[str] = set()
            for kind, table in groups:
                for (name, labels), value in sorted(table):
                    full = "telegen_" + name
                    if full not in seen:
                        seen.add(full)
                        lines.append(f"# TYPE {full} {kind}")
                    lines.append(f"{_series(full, labels)} {value}")
        return "\n".join(lines) + "\n"

    def log_summary(self, logger: logging.Logger = log) -> None:
        for series, value in self.snapshot().items():
            if value:
                logger.info("telemetry %s = %s", series, value)


def sum_series(snapshot: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the series ``name`` of a :meth:`Registry.snapshot` whose labels
    include ``labels`` (e.g. every ``ebpf_unwind_full`` of one process)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for series, v in snapshot.items()
               if series.split("{")[0] == name and all(w in series for w in want))


def _series(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return name
    body = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{body}}}"


class MetricsServer:
    """Serves ``/metrics`` in Prometheus text format on a background thread,
    bounded like every agent server (:mod:`telegen.helpers.httpserver`: Host
    allow-list, timeouts, connection cap); refusals are counted as
    ``refused_inputs{kind="service",component="telemetry",source="metrics_http"}``."""

    def __init__(self, registry: Registry, host: str, port: int) -> None:
        reg = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                reply(self, 200, "text/plain; version=0.0.4", reg.prometheus_text().encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        refusals = Refusals(registry.for_component("service", "telemetry"), log)
        self._http = BackgroundHTTPServer(f"{host}:{port}", Handler, "telemetry-metrics",
                                          refusals=refusals, source="metrics_http")
        self.address = self._http.address

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        self._http.stop()
