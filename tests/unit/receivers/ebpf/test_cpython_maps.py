"""bpf/cpython.h's maps as the receiver reads them (receivers/ebpf/cpython_maps.py),
on real kernel maps: the counters summed over CPUs as deltas, stack entries by id."""

from __future__ import annotations

import ctypes
import os
import re
import struct
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from telegen.bpf import syscall as sc
from telegen.receivers.ebpf.bpf_loader import BPF_DIR
from telegen.receivers.ebpf.cpython_maps import (
    PY_MAX_FRAMES,
    STAT_NAMES,
    CPyStack,
    StackReader,
    WalkerStats,
)


def header_define(name: str) -> int:
    found = re.search(rf"#define {name} (\d+)", (BPF_DIR / "cpython.h").read_text())
    assert found, name
    return int(found.group(1))


def test_stat_names_and_sizes_match_the_header() -> None:
    text = (BPF_DIR / "cpython.h").read_text()
    body = re.search(r"enum py_stat \{(.*?)\};", text, re.S)
    assert body
    code = re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S)
    names = [n.split("=")[0].strip() for n in code.split(",") if n.strip()]
    assert names[-1] == "PYS_N"
    assert list(STAT_NAMES) == [n.removeprefix("PYS_").lower() for n in names[:-1]]
    assert PY_MAX_FRAMES == header_define("PY_MAX_FRAMES")
    assert ctypes.sizeof(CPyStack) == 16 + 16 * PY_MAX_FRAMES


@pytest.fixture
def map_fds() -> Iterator[list[int]]:
    if os.geteuid() != 0:
        pytest.fail("needs root (bpf map creation): run the unit tests as root")
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def test_walker_stats_sum_the_cpus_and_report_what_changed(map_fds: list[int]) -> None:
    n = len(STAT_NAMES)
    fd = sc.map_create(sc.MAP_PERCPU_ARRAY, 4, 8 * n, 1, 0, b"test_py_stats")
    map_fds.append(fd)
    cpus = sc.possible_cpus()
    key = ctypes.c_uint32(0)

    def write(per_cpu: list[list[int]]) -> None:
        buf = ctypes.create_string_buffer(8 * n * cpus)
        for cpu, values in enumerate(per_cpu):
            struct.pack_into(f"={n}Q", buf, cpu * 8 * n, *values)
        sc.update(fd, ctypes.addressof(key), ctypes.addressof(buf))

    stats = WalkerStats(SimpleNamespace(map_fd=fd, sLeaf=ctypes.c_uint64 * n))
    write([[cpu + 1] * n for cpu in range(cpus)])
    first = stats.delta()
    assert first == dict.fromkeys(STAT_NAMES, cpus * (cpus + 1) // 2)
    write([[cpu + 1 + (i == 1) * 5 for i in range(n)] for cpu in range(cpus)])
    assert stats.delta() == {name: 5 * cpus if name == "stacks" else 0 for name in STAT_NAMES}
    assert stats.delta() == dict.fromkeys(STAT_NAMES, 0)


def test_stack_reader_reads_an_entry_and_misses_an_absent_id(map_fds: list[int]) -> None:
    value_size = ctypes.sizeof(CPyStack)
    fd = sc.map_create(sc.MAP_LRU_HASH, 4, value_size, 16, 0, b"test_py_stacks")
    map_fds.append(fd)
    entry = CPyStack(hash=0x1234_5678_9ABC_DEF0, pid=4242, depth=2, status=1)
    entry.frames[0].code, entry.frames[0].instr, entry.frames[0].owner = 0x7F00_0000_1000, 6, 0
    entry.frames[1].code, entry.frames[1].instr, entry.frames[1].owner = 0x7F00_0000_2000, 10, 3
    key = ctypes.c_uint32(77)
    sc.update(fd, ctypes.addressof(key), ctypes.addressof(entry))
    reader = StackReader(SimpleNamespace(map_fd=fd, Leaf=CPyStack))
    got = reader.read(77)
    assert got is not None
    assert (got.hash, got.pid, got.depth, got.status) == (entry.hash, 4242, 2, 1)
    assert [(f.code, f.instr, f.owner) for f in got.frames[:2]] == [
        (0x7F00_0000_1000, 6, 0), (0x7F00_0000_2000, 10, 3)]
    assert reader.read(78) is None
