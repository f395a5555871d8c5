"""The ``pprof`` receiver against a tenant who owns the watched directory,
for real (files planted as ``nobody`` with ``setpriv``): symlinked files and
directories are never followed, a directory swapped for a symlink between
the read and ``delete_after_read`` deletes nothing outside, FIFOs and
sparse huge files are refused without blocking or reading."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telegen.component import ComponentID, CreateSettings, Kind
from telegen.pdata import Profiles
from telegen.receivers.pprof.config import PprofReceiverConfig
from telegen.receivers.pprof.receiver import PprofReceiver
from telegen.telemetry import Registry
from telegen.testing import require
from telegen.testing.sink import Sink
from telegen.testing.tenant import nobody_dir, root_only_dir, run_as_nobody, snapshot

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "pprof"
LOG = "test.security.pprof"


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    require.tools("setpriv", "mkfifo", "truncate", provider="util-linux and coreutils")
    require.prerequisite(os.geteuid() == 0, "root (the agent's own privilege)")


@pytest.fixture
def victim() -> Iterator[Path]:
    d = root_only_dir()
    shutil.copy(TESTDATA / "go-cpu.pb.gz", d / "a.pb.gz")        # same name as the tenant's
    shutil.copy(TESTDATA / "go-heap.pb.gz", d / "keep.pb.gz")
    os.chmod(d / "a.pb.gz", 0o600)
    os.chmod(d / "keep.pb.gz", 0o600)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tenant() -> Iterator[Path]:
    d = nobody_dir("telegen-tenant-")
    run_as_nobody(["mkdir", f"{d}/profiles"])
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _plant(tenant: Path, name: str, source: str = "go-cpu.pb.gz") -> None:
    run_as_nobody(["cp", str(TESTDATA / source), f"{tenant}/profiles/{name}"])


def _receiver(consumer: Any, **cfg: Any) -> tuple[PprofReceiver, Registry]:
    config = PprofReceiverConfig(**cfg)
    config.validate()
    registry = Registry()
    settings = CreateSettings(ComponentID("pprof"), Kind.RECEIVER,
                              registry.for_component("receiver", "pprof"), logging.getLogger(LOG))
    return PprofReceiver(settings, config, consumer), registry


def _refused(registry: Registry, reason: str) -> int:
    return int(registry.for_component("receiver", "pprof").counter(
        "refused_inputs", source="pprof_file", reason=reason).value)


def _warnings(caplog: pytest.LogCaptureFixture, reason: str) -> int:
    return sum(1 for r in caplog.records if r.levelno == logging.WARNING
               and f"refused pprof_file ({reason})" in r.message)


def test_directory_swapped_for_a_symlink_before_delete_deletes_nothing_outside(
        tenant: Path, victim: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The tenant swaps the watched directory for a symlink to a root-only
    directory holding a file of the same name while the agent is handing the
    profile on, i.e. between the read and ``delete_after_read``."""
    _plant(tenant, "a.pb.gz")
    before = snapshot(victim)

    class SwapWhileConsuming(Sink):
        def consume(self, profiles: Profiles) -> None:
            run_as_nobody(["mv", f"{tenant}/profiles", f"{tenant}/profiles.old"])
            run_as_nobody(["ln", "-s", str(victim), f"{tenant}/profiles"])
            super().consume(profiles)

    sink = SwapWhileConsuming()
    rx, registry = _receiver(sink, paths=[f"{tenant}/profiles/*.pb.gz"], watch=True,
                             delete_after_read=True)
    with caplog.at_level(logging.DEBUG, logger=LOG):
        assert rx.scan(first=True) == 1
        assert os.path.islink(f"{tenant}/profiles")
        for _ in range(3):                      # later polls: the symlink is never entered
            assert rx.scan(first=False) == 0
    assert snapshot(victim) == before           # victim/a.pb.gz not deleted, nothing read
    assert os.path.exists(f"{tenant}/profiles.old/a.pb.gz")   # kept: its name was gone
    assert len(sink.profiles()) == 1
    assert _refused(registry, "symlink") >= 1
    assert _warnings(caplog, "symlink") == 1


def test_symlinked_files_and_directories_are_not_followed(
        tenant: Path, victim: Path, caplog: pytest.LogCaptureFixture) -> None:
    _plant(tenant, "mine.pb.gz")
    run_as_nobody(["ln", "-s", f"{victim}/keep.pb.gz", f"{tenant}/profiles/link.pb.gz"])
    run_as_nobody(["ln", "-s", str(victim), f"{tenant}/profiles/sub"])
    before = snapshot(victim)
    sink = Sink()
    rx, registry = _receiver(sink, paths=[f"{tenant}/profiles/**/*.pb.gz"],
                             delete_after_read=True)
    with caplog.at_level(logging.DEBUG, logger=LOG):
        assert rx.scan(first=True) == 1         # mine.pb.gz only
        assert rx.scan(first=True) == 0
    assert [p.name for p in sink.profiles()] == ["cpu"]
    assert snapshot(victim) == before
    assert os.path.islink(f"{tenant}/profiles/link.pb.gz")
    assert _refused(registry, "symlink") == 1   # link.pb.gz, noted once, not per poll
    assert _warnings(caplog, "symlink") == 1


def test_fifo_and_sparse_huge_file_are_refused_without_blocking(
        tenant: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_as_nobody(["mkfifo", f"{tenant}/profiles/fifo.pb.gz"])
    run_as_nobody(["truncate", "-s", "100G", f"{tenant}/profiles/huge.pb.gz"])
    _plant(tenant, "good.pb.gz")
    sink = Sink()
    rx, registry = _receiver(sink, paths=[f"{tenant}/profiles/*.pb.gz"])
    with caplog.at_level(logging.DEBUG, logger=LOG):
        t0 = time.perf_counter()
        assert rx.scan(first=True) == 2         # huge.pb.gz tried (refused), good.pb.gz read
        took = time.perf_counter() - t0
    print(f"scan with a FIFO and a sparse 100 GiB file: {took * 1e3:.1f} ms")
    assert took < 2.0
    assert [p.name for p in sink.profiles()] == ["cpu"]
    assert _refused(registry, "not_regular") == 1
    assert _refused(registry, "too_large") == 1
    assert int(registry.for_component("receiver", "pprof").counter(
        "receiver_refused_files").value) == 1
