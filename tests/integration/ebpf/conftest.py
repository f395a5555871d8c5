"""Fixtures of the BPF tests. Every test here is marked ``bpf``; the marker's
check (root + a working BPF stack, failing loudly when missing) lives in
tests/conftest.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry, sum_series
from telegen.testing import workloads
from telegen.testing.sink import Sink


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.bpf)


@pytest.fixture(scope="session")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("workloads")
    for name in ("tg_cpu_split", "tg_offcpu", "tg_brief"):
        workloads.build(name, d)
    return d


class Running:
    def __init__(self, config: EbpfConfig) -> None:
        self.registry = Registry()
        settings = CreateSettings(ComponentID("ebpf", "test"), Kind.RECEIVER,
                                  self.registry.for_component("receiver", "ebpf/test"),
                                  logging.getLogger("test.ebpf"))
        self.sink = Sink()
        self.receiver = EbpfReceiver(settings, config, self.sink)

    def metric(self, name: str, **labels: str) -> float:
        return sum_series(self.registry.snapshot(), name, **labels)


@pytest.fixture
def run_receiver() -> Iterator[object]:
    started: list[Running] = []

    def start(**kw: object) -> Running:
        cfg = EbpfConfig(**kw)  # type: ignore[arg-type]
        cfg.validate()
        r = Running(cfg)
        r.receiver.start(None)  # type: ignore[arg-type]
        started.append(r)
        return r

    yield start
    for r in started:
        r.receiver.shutdown()
