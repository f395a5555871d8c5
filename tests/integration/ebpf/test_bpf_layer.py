"""telegen.bpf against real kernel maps (created here with BPF_MAP_CREATE):
BCC's table subset as the receiver uses it, batch drain, per-CPU values,
and a manifest that does not match the kernel's view is refused."""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Any

import pytest

from telegen.bpf import layout
from telegen.bpf import syscall as sc
from telegen.bpf.maps import PerCpuArray
from telegen.bpf.objects import BpfObjects, ManifestError
from telegen.receivers.ebpf.keys import CSampleKey

MAP_CREATE = 0


def create(map_type: int, key: Any, leaf: Any, entries: int) -> int:
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("=IIIII", attr, 0, map_type, ctypes.sizeof(key), ctypes.sizeof(leaf),
                     entries, 0)
    return sc.bpf(MAP_CREATE, attr)


def objects(maps: dict[str, tuple[int, Any, Any, int, int]]) -> BpfObjects:
    fds: list[int] = []
    manifest: dict[str, Any] = {"maps": {}, "programs": {}, "links": []}
    for name, (map_type, key, leaf, entries, fd) in maps.items():
        fds.append(fd)
        manifest["maps"][name] = {
            "fd": len(fds) - 1, "type": map_type, "key_size": ctypes.sizeof(key),
            "value_size": ctypes.sizeof(leaf), "max_entries": entries,
            "key": layout.describe(key), "leaf": layout.describe(leaf)}
    return BpfObjects(fds, manifest)


def spec(map_type: int, key: Any, leaf: Any, entries: int) -> tuple[int, Any, Any, int, int]:
    return map_type, key, leaf, entries, create(map_type, key, leaf, entries)


def test_hash_table_subset() -> None:
    obj = objects({"h": spec(sc.MAP_HASH, CSampleKey, ctypes.c_uint64, 64),
                   "lru": spec(sc.MAP_LRU_HASH, ctypes.c_uint32, ctypes.c_uint8, 64)})
    try:
        t = obj[b"h"]
        k = t.Key(pid=1, tid=2, comm=b"x")
        with pytest.raises(KeyError):
            t[k]
        t[k] = t.Leaf(41)
        assert t[k].value == 41
        assert [(key.pid, v.value) for key, v in t.items()] == [(1, 41)]
        del t[k]
        with pytest.raises(KeyError):
            del t[k]
        lru = obj["lru"]
        for pid in range(10):
            lru[lru.Key(pid)] = lru.Leaf(pid % 3)
        assert len(lru) == 10 and sorted(k.value for k in lru.keys()) == list(range(10))
        lru.clear()
        assert lru.items() == []
    finally:
        obj.close()


@pytest.mark.parametrize("batched", [True, False])
def test_drain_returns_every_entry_once_and_empties_the_map(batched: bool) -> None:
    obj = objects({"h": spec(sc.MAP_HASH, CSampleKey, ctypes.c_uint64, 8192)})
    try:
        t = obj["h"]
        t._batch_ok = batched
        for i in range(5000):
            t[t.Key(pid=i, tid=i + 1)] = t.Leaf(i * 3)
        got = {(int(k.pid), int(getattr(v, "value", v)))
               for k, v in t.items_lookup_and_delete_batch()}
        assert got == {(i, i * 3) for i in range(5000)}
        assert t.keys() == []
    finally:
        obj.close()


def test_arrays_and_per_cpu_arrays() -> None:
    obj = objects({"a": spec(sc.MAP_ARRAY, ctypes.c_uint32, ctypes.c_uint32, 4),
                   "p": spec(sc.MAP_PERCPU_ARRAY, ctypes.c_uint32, ctypes.c_uint64, 3)})
    try:
        a = obj["a"]
        a[a.Key(2)] = a.Leaf(7)
        assert a[2].value == 7 and len(a) == 4
        del a[2]
        assert a[a.Key(2)].value == 0
        p = obj["p"]
        assert isinstance(p, PerCpuArray)
        n = sc.possible_cpus()
        assert p.Leaf is p.sLeaf * n
        p[p.Key(1)] = p.Leaf(*range(10, 10 + n))
        assert list(p[p.Key(1)]) == list(range(10, 10 + n))
        assert int(sum(p[p.Key(1)])) == sum(range(10, 10 + n)) == p.sum(p.Key(1)).value
        assert list(p[p.Key(0)]) == [0] * n
    finally:
        obj.close()


class Odd(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32), ("c", ctypes.c_uint32)]


def test_per_cpu_array_of_a_struct_whose_size_is_not_a_multiple_of_8() -> None:
    obj = objects({"p": spec(sc.MAP_PERCPU_ARRAY, ctypes.c_uint32, Odd, 2)})
    try:
        p = obj["p"]
        assert isinstance(p, PerCpuArray) and ctypes.sizeof(p.sLeaf) == 12
        n = sc.possible_cpus()
        p[p.Key(1)] = p.Leaf(*[p.sLeaf(i, i + 1, i + 2) for i in range(n)])
        assert [(v.a, v.b, v.c) for v in p[p.Key(1)]] == [(i, i + 1, i + 2) for i in range(n)]
    finally:
        obj.close()


def test_a_manifest_that_lies_about_a_map_is_refused_and_its_fds_closed() -> None:
    fd = create(sc.MAP_HASH, ctypes.c_uint32, ctypes.c_uint64, 16)
    manifest = {"maps": {"h": {"fd": 0, "type": sc.MAP_HASH, "key_size": 4, "value_size": 8,
                               "max_entries": 16, "key": layout.describe(ctypes.c_uint64),
                               "leaf": layout.describe(ctypes.c_uint64)}},
                "programs": {}, "links": []}
    with pytest.raises(ManifestError, match="layout"):
        BpfObjects([fd], manifest)
    with pytest.raises(OSError):
        os.fstat(fd)
    fd = create(sc.MAP_HASH, ctypes.c_uint32, ctypes.c_uint64, 16)
    manifest["maps"]["h"]["max_entries"] = 17          # type: ignore[index]
    with pytest.raises(ManifestError, match="kernel says"):
        BpfObjects([fd], manifest)
    fd = create(sc.MAP_HASH, ctypes.c_uint32, ctypes.c_uint64, 16)
    manifest["maps"]["h"]["fd"] = 1                    # type: ignore[index]
    with pytest.raises(ManifestError, match="descriptor index"):
        BpfObjects([fd], manifest)
