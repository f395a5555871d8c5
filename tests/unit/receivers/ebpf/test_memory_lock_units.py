"""Memory/lock profiling pieces that need no BPF: config keys, the sampling
estimator (the BPF's integer arithmetic re-done in Python), allocator
symbol discovery on real ELF files."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import subprocess
from pathlib import Path

import pytest

from telegen.receivers.ebpf.bpf_loader import BpfOptions
from telegen.receivers.ebpf.config import EbpfConfig
from telegen.receivers.ebpf.memory import (
    EXP_TABLE,
    FP_ONE,
    exp_table,
    newer,
    weight,
    weight_table,
)
from telegen.receivers.ebpf.uprobes import allocator_symbols as symbols_of_fd
from telegen.receivers.ebpf.uprobes import mapped_files, start_time
from telegen.testing import require
from telegen.testing.workloads import WORKLOAD_DIR


def test_config_keys_and_validation() -> None:
    c = EbpfConfig()
    assert (c.memory, c.memory_mode, c.sample_every_bytes, c.mutex) == (False, "alloc",
                                                                        512 * 1024, False)
    assert c.mutex_threshold == 0.00001
    EbpfConfig(cpu=False, off_cpu=False, memory=True).validate()     # memory alone is enough
    EbpfConfig(cpu=False, off_cpu=False, mutex=True).validate()
    for change, msg in (({"sample_every_bytes": -1}, "sample_every_bytes"),
                        ({"mutex_threshold": -1.0}, "mutex_threshold"),
                        ({"cpu": False, "off_cpu": False}, "memory, mutex")):
        with pytest.raises(ValueError, match=msg):
            dataclasses.replace(EbpfConfig(), **change).validate()


def test_bpf_options_select_programs_and_flags() -> None:
    o = BpfOptions(cpu=False, off_cpu=False, memory=True, memory_inuse=True,
                   sample_every_bytes=4096, mutex=True, mutex_threshold_ns=5000)
    src, flags = o.source(), o.cflags()
    assert "mem_malloc" in src and "sys_enter_futex" in src and "on_cpu_sample" not in src
    assert "-DMEM_INUSE" in flags and "-DSAMPLE_EVERY_BYTES=4096ULL" in flags
    assert "-DMUTEX_MIN_NS=5000ULL" in flags
    plain = BpfOptions()
    assert "mem_malloc" not in plain.source() and "-DMEM_INUSE" not in plain.cflags()


def test_exp_table_is_exponential_with_mean_one() -> None:
    t = [v / FP_ONE for v in exp_table()]
    assert len(t) == EXP_TABLE
    assert abs(sum(t) / len(t) - 1.0) < 1e-3
    median = sorted(t)[len(t) // 2]
    assert abs(median - math.log(2)) < 0.01


def bpf_weight(size: int, rate: int, table: list[int]) -> int:
    """bpf/memory.bpf.c weight(), integer for integer."""
    x_fp = (size << 16) // rate
    if x_fp >= 16 * FP_ONE:
        return FP_ONE
    if x_fp >= FP_ONE:
        return table[(x_fp - FP_ONE) >> 8]
    return (rate << 16) // size + FP_ONE // 2 + x_fp // 12


@pytest.mark.parametrize("size", [1, 16, 100, 2048, 65536, 300_000, 524288, 800_000,
                                  2_000_000, 8_000_000, 9_000_000])
def test_bpf_weight_matches_one_over_p(size: int) -> None:
    rate = 512 * 1024
    got = bpf_weight(size, rate, weight_table()) / FP_ONE
    assert got == pytest.approx(weight(size, rate), rel=3e-3)


def test_byte_sampling_is_unbiased() -> None:
    """The BPF countdown (exponential gaps from the table) + 1/p weights give
    unbiased totals for mixed sizes: simulated with the same integers."""
    rate, rng = 64 * 1024, random.Random(6)
    exp, wt = exp_table(), weight_table()
    sizes = [16, 2048, 40_000, 200_000, 1_500_000]
    truth = dict.fromkeys(sizes, 0)
    est = dict.fromkeys(sizes, 0)
    calls = dict.fromkeys(sizes, 0)
    left = (exp[rng.randrange(EXP_TABLE)] * rate >> 16) + 1
    for _ in range(400_000):
        size = rng.choice(sizes)
        truth[size] += size
        calls[size] += 1
        left -= size
        if left > 0:
            continue
        left = (exp[rng.randrange(EXP_TABLE)] * rate >> 16) + 1
        est[size] += (size * bpf_weight(size, rate, wt)) >> 16
    for size in sizes:
        p = 1 - math.exp(-size / rate)
        sigma = math.sqrt(calls[size] * size * size * (1 - p) / p)   # Poisson thinning
        assert abs(est[size] - truth[size]) <= 4 * sigma + 1e-3 * truth[size], size
    assert sum(est.values()) == pytest.approx(sum(truth.values()), rel=0.02)


def test_newer_handles_wraparound() -> None:
    assert newer(5, 4) and not newer(4, 4) and not newer(3, 4)
    assert newer(0, 0xFFFFFFFF) and not newer(0xFFFFFFFF, 0)


def allocator_symbols(path: str, *, inuse: bool) -> dict[str, int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return symbols_of_fd(fd, inuse=inuse)
    finally:
        os.close(fd)


def libc_path() -> str:
    return next(p for p in mapped_files(os.getpid()) if os.path.basename(p).startswith("libc.so"))


def test_libc_allocator_symbols() -> None:
    alloc = allocator_symbols(libc_path(), inuse=False)
    assert {"malloc", "calloc", "realloc", "posix_memalign"} <= set(alloc)
    assert "free" not in alloc
    assert len(set(alloc.values())) == len(alloc), "one probe per address"
    assert "free" in allocator_symbols(libc_path(), inuse=True)


def test_objects_without_malloc_are_not_allocators(tmp_path: Path) -> None:
    assert allocator_symbols("/bin/true", inuse=True) == {}


def test_statically_linked_binary_is_its_own_allocator(tmp_path: Path) -> None:
    require.tools("gcc", provider="gcc, scripts/setup-host.sh")
    out = tmp_path / "tg_alloc_static"
    res = subprocess.run(["gcc", "-O2", "-static", "-o", str(out),
                          str(WORKLOAD_DIR / "tg_alloc.c")], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"static link failed (libc6-dev provides libc.a): {res.stderr}")
    syms = allocator_symbols(str(out), inuse=True)
    assert {"malloc", "free", "calloc", "realloc"} <= set(syms)


def test_mapped_files_and_start_time() -> None:
    files = mapped_files(os.getpid())
    assert any(os.path.basename(p).startswith("libc.so") for p in files)
    assert start_time(os.getpid()) == start_time(os.getpid()) is not None
    assert start_time(2 ** 22 + 12345) is None
