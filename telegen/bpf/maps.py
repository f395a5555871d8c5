"""BPF maps held by descriptor, with the subset of BCC's table API telegen uses.

``t[key]`` (KeyError when absent), ``t[key] = leaf``, ``del t[key]``,
``t.keys()``/``items()``/``values()``, ``t.clear()``,
``t.items_lookup_and_delete_batch()`` (BPF_MAP_LOOKUP_AND_DELETE_BATCH,
else look-up + delete per key), ``t.Key``/``t.Leaf``; arrays take int keys
and zero on delete; per-CPU arrays return one leaf per possible CPU (BCC's
``Leaf`` is then ``sLeaf * ncpus``); ring buffers ``open_ring_buffer(cb)``.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Iterator
from typing import Any

from telegen.bpf import syscall as sc
from telegen.bpf.ringbuf import RingBuffer, RingBuffers, RingCallback

BATCH = 1024
ENOTSUPP = 524         # the kernel's own "not supported" (no libc name)


class Table:
    def __init__(self, fd: int, name: str, info: sc.MapInfo, key: Any, leaf: Any) -> None:
        self.map_fd = fd
        self.name = name
        self.info = info
        self.max_entries = info.max_entries
        self.Key = key
        self.Leaf = leaf
        self._batch_ok = True

    def get_fd(self) -> int:
        return self.map_fd

    def _key(self, key: Any) -> Any:
        return self.Key(key) if isinstance(key, int) else key

    def _new_leaf(self) -> Any:
        return self.Leaf()

    def _leaf_from_raw(self, raw: Any) -> Any:
        return raw

    def _raw_from_leaf(self, leaf: Any) -> Any:
        return leaf

    def __getitem__(self, key: Any) -> Any:
        key = self._key(key)
        raw = self._new_leaf()
        try:
            sc.lookup(self.map_fd, ctypes.addressof(key), ctypes.addressof(raw))
        except OSError as exc:
            raise KeyError(key) from exc
        return self._leaf_from_raw(raw)

    def __setitem__(self, key: Any, leaf: Any) -> None:
        key = self._key(key)
        raw = self._raw_from_leaf(leaf)
        try:
            sc.update(self.map_fd, ctypes.addressof(key), ctypes.addressof(raw))
        except OSError as exc:
            raise Exception(f"Could not update table {self.name}: {exc.strerror}") from exc

    def __delitem__(self, key: Any) -> None:
        key = self._key(key)
        try:
            sc.delete(self.map_fd, ctypes.addressof(key))
        except OSError as exc:
            raise KeyError(key) from exc

    def __contains__(self, key: Any) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[Any]:
        prev = None
        while True:
            nxt = self.Key()
            if not sc.next_key(self.map_fd, ctypes.addressof(prev) if prev is not None
                               else None, ctypes.addressof(nxt)):
                return
            yield nxt
            prev = nxt

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def keys(self) -> list[Any]:
        # not list(self): list() asks __len__ first, which walks every key too
        return [k for k in self]  # noqa: C416

    def items(self) -> list[tuple[Any, Any]]:
        out = []
        for k in self.keys():
            try:
                out.append((k, self[k]))
            except KeyError:          # deleted between listing and reading
                pass
        return out

    def values(self) -> list[Any]:
        return [v for _, v in self.items()]

    def clear(self) -> None:
        for k in self.keys():
            try:
                del self[k]
            except KeyError:
                pass

    def items_lookup_and_delete_batch(self) -> Iterator[tuple[Any, Any]]:
        """Every entry, deleted as read: batched where the kernel and map type
        allow it, else one key at a time."""
        if self._batch_ok:
            try:
                yield from self._batch()
                return
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP):
                    raise
                self._batch_ok = False
        for k, v in self.items():
            try:
                del self[k]
            except KeyError:
                continue
            yield k, v

    def _batch(self) -> Iterator[tuple[Any, Any]]:
        n = min(self.max_entries, BATCH)
        token = max(ctypes.sizeof(self.Key), 8)
        tokens = (ctypes.create_string_buffer(token), ctypes.create_string_buffer(token))
        first = True
        while True:
            keys = (self.Key * n)()
            values = (self.Leaf * n)()
            try:
                got, more = sc.lookup_and_delete_batch(
                    self.map_fd, None if first else ctypes.addressof(tokens[0]),
                    ctypes.addressof(tokens[1]), ctypes.addressof(keys),
                    ctypes.addressof(values), n)
            except OSError as exc:
                if exc.errno == errno.ENOSPC and n < self.max_entries:   # a big bucket
                    n = min(n * 2, self.max_entries)
                    continue
                raise
            for i in range(got):
                yield keys[i], values[i]
            if not more:
                return
            ctypes.memmove(tokens[0], tokens[1], token)
            first = False

    def close(self) -> None:
        pass


class ArrayTable(Table):
    def __len__(self) -> int:
        return self.max_entries

    def __iter__(self) -> Iterator[Any]:
        return (self.Key(i) for i in range(self.max_entries))

    def __delitem__(self, key: Any) -> None:
        """Array entries cannot be deleted: zeroed instead (as BCC does)."""
        self[key] = self.Leaf()

    def clear(self) -> None:
        for k in self:
            del self[k]

    def items_lookup_and_delete_batch(self) -> Iterator[tuple[Any, Any]]:
        for k, v in self.items():
            del self[k]
            yield k, v


class PerCpuArray(ArrayTable):
    """Values are one ``sLeaf`` per possible CPU, each slot 8-byte aligned."""

    def __init__(self, fd: int, name: str, info: sc.MapInfo, key: Any, leaf: Any) -> None:
        self.ncpus = sc.possible_cpus()
        self.sLeaf = leaf
        self._slot = (ctypes.sizeof(leaf) + 7) & ~7
        super().__init__(fd, name, info, key, leaf * self.ncpus)

    def _new_leaf(self) -> Any:
        return ctypes.create_string_buffer(self._slot * self.ncpus)

    def _leaf_from_raw(self, raw: Any) -> Any:
        out = self.Leaf()
        size = ctypes.sizeof(self.sLeaf)
        for i in range(self.ncpus):
            ctypes.memmove(ctypes.addressof(out) + i * size,
                           ctypes.addressof(raw) + i * self._slot, size)
        return out

    def _raw_from_leaf(self, leaf: Any) -> Any:
        raw = self._new_leaf()
        size = ctypes.sizeof(self.sLeaf)
        for i in range(self.ncpus):
            ctypes.memmove(ctypes.addressof(raw) + i * self._slot,
                           ctypes.addressof(leaf) + i * size, size)
        return raw

    def sum(self, key: Any) -> Any:
        return self.sLeaf(sum(self[key]))


class StackTrace(Table):
    """Stack trace maps: no batch operations; cleared key by key."""

    def items_lookup_and_delete_batch(self) -> Iterator[tuple[Any, Any]]:
        self._batch_ok = False
        return super().items_lookup_and_delete_batch()


class RingBuf(Table):
    def __init__(self, fd: int, name: str, info: sc.MapInfo, key: Any, leaf: Any,
                 rings: RingBuffers) -> None:
        super().__init__(fd, name, info, key, leaf)
        self._rings = rings

    def open_ring_buffer(self, callback: RingCallback, ctx: object = None) -> None:
        self._rings.add(RingBuffer(self.map_fd, self.max_entries, callback))

    def __len__(self) -> int:
        return 0


def make_table(fd: int, name: str, info: sc.MapInfo, key: Any, leaf: Any,
               rings: RingBuffers) -> Table:
    if info.type == sc.MAP_RINGBUF:
        return RingBuf(fd, name, info, key, leaf, rings)
    if info.type == sc.MAP_PERCPU_ARRAY:
        return PerCpuArray(fd, name, info, key, leaf)
    if info.type in (sc.MAP_ARRAY, sc.MAP_PROG_ARRAY):
        return ArrayTable(fd, name, info, key, leaf)
    if info.type == sc.MAP_STACK_TRACE:
        return StackTrace(fd, name, info, key, leaf)
    if info.type in sc.PERCPU_TYPES:
        raise ValueError(f"map {name}: per-CPU hash maps are not supported")
    return Table(fd, name, info, key, leaf)
