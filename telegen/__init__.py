"""telegen: an always-on continuous profiler shaped like an OpenTelemetry Collector."""

from __future__ import annotations

__version__ = "0.1.0"
