"""Stand-in factories for component types colleagues are still writing.

Config tests need receivers (``pprof``, ``ebpf``) and exporters (``pprof_file``,
``console``) to exist. :func:`install` adds a stand-in only for a type the real
registry lacks, so tests exercise real components as soon as they land. The
stand-ins follow the settings agreed for those components; they create nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from telegen import registry
from telegen.component import Factory, Kind

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@dataclass
class EbpfStandin:
    sample_rate: int = 99
    duration: float = field(default=10.0, metadata={"duration": True})
    cpu: bool = True
    off_cpu: bool = False
    off_cpu_threshold: float = field(default=0.0, metadata={"duration": True})
    pids: list[int] = field(default_factory=list)
    process_names: list[str] = field(default_factory=list)
    exclude_pids: list[int] = field(default_factory=list)
    include_kernel: bool = False
    timestamps: bool = False

    def validate(self) -> None:
        if not 1 <= self.sample_rate <= 10000:
            raise ValueError(f"sample_rate must be between 1 and 10000 (got {self.sample_rate})")


@dataclass
class PprofStandin:
    paths: list[str] = field(default_factory=list)
    watch: bool = False
    poll_interval: float = field(default=5.0, metadata={"duration": True})

    def validate(self) -> None:
        if not self.paths:
            raise ValueError("paths: list at least one glob of pprof files")


@dataclass
class PprofFileStandin:
    directory: str = "./profiles"
    max_files: int = 0
    max_bytes: int = 0


@dataclass
class ConsoleStandin:
    top: int = 10
    sample_type: str = ""
    output: str = "stdout"


def _create(settings: Any, config: Any, next_consumer: Any) -> Any:
    raise NotImplementedError("stand-in factory: config tests only")


STANDINS = [
    Factory("ebpf", Kind.RECEIVER, EbpfStandin, _create, str(SCHEMAS / "ebpf.json")),
    Factory("pprof", Kind.RECEIVER, PprofStandin, _create, str(SCHEMAS / "pprof.json")),
    Factory("pprof_file", Kind.EXPORTER, PprofFileStandin, _create,
            str(SCHEMAS / "pprof_file.json")),
    Factory("console", Kind.EXPORTER, ConsoleStandin, _create, str(SCHEMAS / "console.json")),
]


def install(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the registry real factories + stand-ins for missing types; return
    the stand-in type names in use."""
    real = dict(registry.factories())
    used = []
    for f in STANDINS:
        if (f.kind, f.type) not in real:
            real[(f.kind, f.type)] = f
            used.append(f.type)
    monkeypatch.setattr(registry, "factories", lambda: real)
    return used


def only(monkeypatch: pytest.MonkeyPatch, *factories: Factory) -> None:
    """Make the registry hold exactly ``factories``."""
    table = {(f.kind, f.type): f for f in factories}
    monkeypatch.setattr(registry, "factories", lambda: table)


def real(kind: Kind, type_: str) -> Factory | None:
    return registry.factories().get((kind, type_))
