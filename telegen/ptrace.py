"""What flows through a ``traces`` pipeline, and the part of a span that
profile linking needs.

telegen does not model traces: a :class:`Traces` batch is one OTLP
``ExportTraceServiceRequest`` kept as the serialized bytes it arrived as, so
a forwarding exporter sends exactly what the instrumented service sent.
:class:`SpanRecord` is the small, immutable extract the ``spanstore``
extension keeps (see ``telegen.formats.otlp_traces``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class SpanRecord:
    trace_id: str            # 32 lower-case hex chars
    span_id: str             # 16 lower-case hex chars
    parent_span_id: str      # "" for a root span
    name: str
    start_ns: int            # unix ns
    end_ns: int              # unix ns
    pid: int | None = None   # resource attribute process.pid
    tid: int | None = None   # span attribute thread.id

    def covers(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns


@dataclass(frozen=True, slots=True)
class Traces:
    """One OTLP traces export request, as serialized protobuf bytes."""

    payload: bytes
    span_count: int = 0


@runtime_checkable
class TracesConsumer(Protocol):
    """A component in a ``traces`` pipeline (today: exporters that forward)."""

    def consume_traces(self, traces: Traces) -> None: ...
