from __future__ import annotations

import logging
from pathlib import Path

import pytest
from native_programs import C_PROGRAM

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import CPU, Frame, Profile, Profiles, make_labels
from telegen.processors.symbolize.config import SymbolizeConfig
from telegen.processors.symbolize.symbolize import SymbolizeProcessor
from telegen.telemetry import Registry
from telegen.testing.native import compile_c
from telegen.testing.sink import Sink


class Harness:
    """A symbolize processor wired to a Sink, with its own telemetry registry."""

    def __init__(self, tmp: Path, **config: object) -> None:
        config.setdefault("debuginfod_urls", [])
        config.setdefault("debuginfod_cache_dir", str(tmp / "debuginfod-cache"))
        self.registry = Registry()
        settings = CreateSettings(ComponentID("symbolize"), Kind.PROCESSOR,
                                  self.registry.for_component("processor", "symbolize"),
                                  logging.getLogger("test"))
        self.sink = Sink()
        self.proc = SymbolizeProcessor(settings, SymbolizeConfig(**config), self.sink)

    def run(self, stack: tuple[Frame, ...], pid: int) -> tuple[Frame, ...]:
        profile = Profile(name="cpu", sample_types=CPU)
        profile.add(stack, [1, 10_000_000], make_labels(**{"process.pid": pid}))
        self.proc.consume(Profiles([profile]))
        out = self.sink.profiles()[-1].samples
        assert len(out) == 1
        return out[0].stack

    def counter(self, name: str, **labels: str) -> float:
        items = sorted({"component": "symbolize", "kind": "processor", **labels}.items())
        return self.registry.snapshot().get(
            name + "{" + ",".join(f'{k}="{v}"' for k, v in items) + "}", 0)

    def close(self) -> None:
        self.proc.shutdown()


@pytest.fixture
def harness(tmp_path: Path):
    made: list[Harness] = []

    def make(**config: object) -> Harness:
        h = Harness(tmp_path, **config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture(scope="session")
def c_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C program built -O2 -g (not stripped)."""
    return compile_c(C_PROGRAM, tmp_path_factory.mktemp("cprog") / "cprog")
