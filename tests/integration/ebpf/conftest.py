"""BPF tests need root and a working BPF stack. They fail loudly when it is
missing (CI runs as root), unless TELEGEN_ALLOW_NO_BPF=1 (then they skip,
saying why)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen import doctor
from telegen.component import ComponentID, CreateSettings, Kind
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.receiver import EbpfReceiver
from telegen.telemetry import Registry
from telegen.testing import workloads
from telegen.testing.sink import Sink


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.bpf)


@pytest.fixture(scope="session", autouse=True)
def bpf_available() -> None:
    checks = doctor.run_checks(("root", *doctor.EBPF_PROFILING))
    if all(c.ok for c in checks):
        return
    text = doctor.report(checks)
    if os.environ.get("TELEGEN_ALLOW_NO_BPF") == "1":
        pytest.skip(f"BPF UNAVAILABLE, eBPF tests NOT RUN (TELEGEN_ALLOW_NO_BPF=1):\n{text}")
    pytest.fail(f"BPF prerequisites missing; these tests must run as root on a BPF-capable "
                f"host (set TELEGEN_ALLOW_NO_BPF=1 to skip):\n{text}", pytrace=False)


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
        total = 0.0
        for series, value in self.registry.snapshot().items():
            if series.split("{")[0] == name and all(f'{k}="{v}"' in series
                                                    for k, v in labels.items()):
                total += value
        return total


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
