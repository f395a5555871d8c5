"""The loaded BPF object as the agent holds it: map, program and link
descriptors received from the compiler child, checked against the kernel's
own description of each (``BPF_OBJ_GET_INFO_BY_FD``), and presented like
BCC's ``BPF`` object for the parts telegen uses: ``obj[b"name"]`` tables,
``funcs``, ``ring_buffer_poll``/``ring_buffer_consume``, and uprobes
attached later by ``perf_event_open`` on a program the child loaded."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

from telegen.bpf import layout, perf
from telegen.bpf import syscall as sc
from telegen.bpf.maps import Table, make_table
from telegen.bpf.ringbuf import RingBuffers


class ManifestError(ValueError):
    pass


@dataclass
class Program:
    name: bytes
    fd: int
    type: int


class BpfObjects:
    def __init__(self, fds: list[int], manifest: dict[str, Any]) -> None:
        self.tables: dict[bytes, Table] = {}
        self.funcs: dict[bytes, Program] = {}
        self.links: list[int] = []          # perf events / raw tracepoints keeping attachments
        self.timings: dict[str, float] = dict(manifest.get("timings", {}))
        # CLOCK_MONOTONIC instants of the load's steps (child start, compiled, sampling...)
        self.marks: dict[str, float] = {k: float(v) for k, v in manifest.get("marks", {}).items()
                                        if isinstance(v, (int, float))}
        self._fds = list(fds)
        self._rings = RingBuffers()
        self.uprobe_fds: set[int] = set()
        used: set[int] = set()
        try:
            for name, m in manifest["maps"].items():
                self.tables[name.encode()] = self._table(name, self._fd(m["fd"], used), m)
            for name, p in manifest["programs"].items():
                fd = self._fd(p["fd"], used)
                info = sc.prog_info(fd)
                if info.type != p["type"]:
                    raise ManifestError(f"program {name}: type {info.type} != {p['type']}")
                self.funcs[name.encode()] = Program(name.encode(), fd, info.type)
            for link in manifest["links"]:
                self.links.append(self._fd(link["fd"], used))
        except BaseException:
            self.close()
            raise
        for i, fd in enumerate(self._fds):
            if i not in used:
                os.close(fd)
        self._fds = [fd for i, fd in enumerate(self._fds) if i in used]

    def _fd(self, index: Any, used: set[int]) -> int:
        if not isinstance(index, int) or not 0 <= index < len(self._fds) or index in used:
            raise ManifestError(f"bad descriptor index {index!r}")
        used.add(index)
        return self._fds[index]

    def _table(self, name: str, fd: int, m: dict[str, Any]) -> Table:
        info = sc.map_info(fd)
        want = (m["type"], m["key_size"], m["value_size"], m["max_entries"])
        if (info.type, info.key_size, info.value_size, info.max_entries) != want:
            raise ManifestError(f"map {name}: kernel says {info}, manifest {want}")
        key = layout.build(m["key"]) if m.get("key") else None
        leaf = layout.build(m["leaf"]) if m.get("leaf") else None
        if info.type != sc.MAP_RINGBUF:
            if key is None or ctypes.sizeof(key) != info.key_size or leaf is None or \
                    ctypes.sizeof(leaf) != info.value_size:
                raise ManifestError(f"map {name}: key/leaf layout does not match its sizes")
        return make_table(fd, name, info, key, leaf, self._rings)

    # -- BCC's BPF object, the parts telegen uses ----------------------------------
    def __getitem__(self, name: bytes | str) -> Table:
        return self.tables[name.encode() if isinstance(name, str) else name]

    def __contains__(self, name: bytes | str) -> bool:
        return (name.encode() if isinstance(name, str) else name) in self.tables

    def get_table(self, name: bytes | str) -> Table:
        return self[name]

    def ring_buffer_poll(self, timeout: int = -1) -> int:
        return self._rings.poll(timeout)

    def ring_buffer_consume(self) -> int:
        return self._rings.consume()

    def attach_uprobe(self, fn_name: bytes | str, path: str, offset: int, *, pid: int = -1,
                      retprobe: bool = False) -> int:
        """Attach program ``fn_name`` (loaded by the child, not attached) at a
        file offset; returns the perf event fd (``detach_uprobe`` closes it)."""
        prog = self.funcs.get(fn_name.encode() if isinstance(fn_name, str) else fn_name)
        if prog is None:
            raise KeyError(f"program {fn_name!r} was not loaded by the compiler child")
        fd = perf.attach_uprobe(prog.fd, path, offset, pid=pid, retprobe=retprobe)
        self.uprobe_fds.add(fd)
        return fd

    def detach_uprobe(self, fd: int) -> None:
        if fd in self.uprobe_fds:
            self.uprobe_fds.discard(fd)
            os.close(fd)

    def close(self) -> None:
        """Detach everything (closing the last descriptors) and release the maps."""
        self._rings.close()
        for fd in list(self.uprobe_fds):
            self.detach_uprobe(fd)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        self.links = []
        self.tables = {}
        self.funcs = {}
