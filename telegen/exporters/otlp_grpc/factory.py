"""``otlp_grpc``: another name for the ``otlp`` exporter (same settings)."""
from __future__ import annotations

from telegen.exporters.otlp.factory import make_factory

FACTORY = make_factory("otlp_grpc")
