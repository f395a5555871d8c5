"""Fixtures of the container tests: real podman containers (runc, cgroupfs,
explicit ulimits: telegen.testing.containers). A missing podman or base image
fails the test with its name, never a skip: `make test` installs both."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import Profiles
from telegen.processors.symbolize.config import SymbolizeConfig
from telegen.processors.symbolize.symbolize import SymbolizeProcessor
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry, sum_series
from telegen.testing import containers
from telegen.testing.require import prerequisite
from telegen.testing.sink import Sink


@pytest.fixture(scope="session")
def base_image() -> str:
    missing = containers.available()
    prerequisite(not missing, missing)
    return containers.base_image()


class PidFilter:
    """Forwards only the samples of some pids (a whole-host window holds every
    process on the machine; the tests symbolize only their workload's)."""

    mutates_data = True

    def __init__(self, pids: Callable[[], set[int]], next_consumer: object) -> None:
        self._pids = pids
        self._next = next_consumer

    def consume(self, profiles: Profiles) -> None:
        wanted = self._pids()
        for p in profiles:
            p.replace_samples([s for s in p if dict(s.labels).get("process.pid") in wanted])
        self._next.consume(profiles)  # type: ignore[attr-defined]


class Pipeline:
    """ebpf receiver (whole host) -> pid filter -> symbolize -> sink, the
    production order, with one telemetry registry."""

    def __init__(self, pids: Callable[[], set[int]], **ebpf: object) -> None:
        self.registry = Registry()
        self.sink = Sink()

        def settings(kind: Kind, name: str) -> CreateSettings:
            return CreateSettings(ComponentID(name, "test"), kind,
                                  self.registry.for_component(kind.value, f"{name}/test"),
                                  logging.getLogger(f"test.{name}"))

        self.symbolize = SymbolizeProcessor(settings(Kind.PROCESSOR, "symbolize"),
                                            SymbolizeConfig(debuginfod_urls=[]), self.sink)
        self.filter = PidFilter(pids, self.symbolize)
        config = EbpfConfig(**ebpf)  # type: ignore[arg-type]
        config.validate()
        self.receiver = EbpfReceiver(settings(Kind.RECEIVER, "ebpf"), config, self.filter)

    def metric(self, name: str, **labels: str) -> float:
        return sum_series(self.registry.snapshot(), name, **labels)


@pytest.fixture
def ebpf_pipeline() -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def start(pids: Callable[[], set[int]], **ebpf: object) -> Pipeline:
        p = Pipeline(pids, **ebpf)
        p.receiver.start(None)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield start
    for p in made:
        p.receiver.shutdown()
        p.symbolize.shutdown()
