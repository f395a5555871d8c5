"""Loading a compiled object (:mod:`telegen.bpf.compiled`) with plain
``bpf()`` syscalls: maps created (``BPF_MAP_CREATE``), each program's map
references and SELF_TGID written, programs loaded (``BPF_PROG_LOAD``, the
verifier's log on failure) and attached as BCC would have (tracepoints,
raw tracepoints, the per-CPU cpu-clock sampler).

Staged: the cpu-clock program is loaded and attached first, so sampling
starts before the verifier has seen the others (the sched_switch program
alone takes it longer than the sampler). Used by the compiler child right
after each of BCC's compiles (on BCC's own maps; one :class:`Loading`
across its phases, so a later phase's programs use the maps the first one
made) and by the agent on a start-up cache hit (no child, no LLVM).
Returns the descriptors and the manifest
:class:`telegen.bpf.objects.BpfObjects` takes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from telegen.bpf import compiled, perf
from telegen.bpf import syscall as sc

VERIFIER_LOG_BYTES = 4 << 20
VERIFIER_LOG_TAIL = 6000
# BCC cuts these prefixes from a program's kernel name (BPF_OBJ_NAME_LEN is 16)
_NAME_PREFIXES = ("raw_tracepoint__", "tracepoint__", "kprobe__", "kretprobe__")


class LoadError(RuntimeError):
    """A map, program or attachment the kernel refused; the message says which."""


def kernel_name(name: str) -> bytes:
    for prefix in _NAME_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name.encode()[:15]


def load_object(obj: dict[str, Any], *, self_tgid: int, sample_rate: int,
                map_fds: dict[str, int] | None = None) -> tuple[list[int], dict[str, Any]]:
    """Load and attach ``obj`` (checked first); ``map_fds`` are existing maps
    to use instead of creating them (the child: BCC's). On failure every
    descriptor made here is closed and LoadError raised."""
    loading = Loading(self_tgid=self_tgid, sample_rate=sample_rate)
    try:
        loading.add(obj, map_fds)
    except BaseException:
        loading.abort()
        raise
    return loading.finish()


class Loading:
    """One load built from one or more compiled objects (the compiler child's
    phases: the cpu sampler's own compile first, then the rest). A map
    already loaded under a name is the one every later program refers to
    (the same kernel object, its definition checked equal); each object's
    sampler is attached before its other programs. ``finish()`` gives the
    descriptors and the manifest; ``abort()`` closes what was made here."""

    def __init__(self, *, self_tgid: int, sample_rate: int) -> None:
        self.self_tgid = self_tgid
        self.sample_rate = sample_rate
        self.marks: dict[str, float] = {}
        self.fds: list[int] = []
        self.owned: list[int] = []
        self.maps: dict[str, Any] = {}
        self.definitions: dict[str, Any] = {}
        self.by_name: dict[str, int] = {}
        self.programs: dict[str, Any] = {}
        self.links: list[dict[str, Any]] = []
        self.load_s = 0.0

    def _index(self, fd: int) -> int:
        self.fds.append(fd)
        return len(self.fds) - 1

    def add(self, obj: dict[str, Any], map_fds: dict[str, int] | None = None) -> None:
        """Load and attach ``obj``'s maps (those not loaded yet) and programs
        (LoadError when one was loaded already, or a map differs)."""
        t0 = time.monotonic()
        self.marks.setdefault("load_start", t0)
        compiled.check(obj)
        for name, m in obj["maps"].items():
            if name in self.definitions:
                if compiled.map_definition(m) != compiled.map_definition(self.definitions[name]):
                    raise LoadError(f"map {name}: two definitions")
                continue
            if map_fds is not None and name in map_fds:
                fd = map_fds[name]
            else:
                try:
                    fd = sc.map_create(m["type"], m["key_size"], m["value_size"],
                                       m["max_entries"], m["flags"], m["kname"].encode())
                except OSError as exc:
                    raise LoadError(f"creating map {name} failed: {exc}") from exc
                self.owned.append(fd)
            self.definitions[name] = m
            self.by_name[name] = fd
            self.maps[name] = compiled.manifest_map(m, self._index(fd))
        self.marks.setdefault("maps", time.monotonic())
        # the sampler first: the first sample does not wait for the other programs
        order = sorted(obj["programs"].items(),
                       key=lambda kv: (kv[1]["attach"] or {}).get("kind") != "cpu_clock")
        for name, p in order:
            if name in self.programs:
                raise LoadError(f"program {name} loaded twice")
            fd = _load(name, p, obj, self.by_name, self.self_tgid)
            self.owned.append(fd)
            self.programs[name] = {"fd": self._index(fd), "type": p["type"]}
            for what, link in _attach(name, p["attach"], fd, self.sample_rate):
                self.owned.append(link)
                self.links.append({"fd": self._index(link), "what": what})
            if (p["attach"] or {}).get("kind") == "cpu_clock":
                self.marks["sampling"] = time.monotonic()
        self.marks["loaded"] = time.monotonic()
        self.load_s += self.marks["loaded"] - t0

    def abort(self) -> None:
        for fd in self.owned:
            os.close(fd)
        self.owned = []

    def finish(self) -> tuple[list[int], dict[str, Any]]:
        timings = {"load_s": self.load_s}
        return self.fds, {"maps": self.maps, "programs": self.programs, "links": self.links,
                          "timings": timings, "marks": self.marks}


def _load(name: str, p: dict[str, Any], obj: dict[str, Any], map_fds: dict[str, int],
          self_tgid: int) -> int:
    insns = compiled.relocate(p, map_fds, self_tgid)
    license = obj["license"].encode()
    fd, _ = sc.prog_load(p["type"], insns, license, obj["kern_version"], kernel_name(name))
    if fd >= 0:
        return fd
    # again with the verifier's log, for the message
    fd, text = sc.prog_load(p["type"], insns, license, obj["kern_version"], kernel_name(name),
                            VERIFIER_LOG_BYTES)
    if fd >= 0:
        return fd
    raise LoadError(f"the kernel refused program {name} ({os.strerror(-fd)}): "
                    f"{text[-VERIFIER_LOG_TAIL:].strip()}")


def _attach(name: str, attach: dict[str, Any] | None, prog_fd: int,
            sample_rate: int) -> list[tuple[str, int]]:
    if attach is None:
        return []
    kind, target = attach["kind"], attach.get("target", "")
    try:
        if kind == "tracepoint":
            category, _, event = target.partition(":")
            return [(f"tracepoint {target}", perf.attach_tracepoint(prog_fd, category, event))]
        if kind == "raw_tracepoint":
            return [(f"raw_tracepoint {target}",
                     sc.raw_tracepoint_open(target.encode(), prog_fd))]
        return [(f"perf_event cpu-clock cpu {cpu}", fd) for cpu, fd in
                perf.attach_cpu_clock(prog_fd, sample_rate)]
    except OSError as exc:
        raise LoadError(f"attaching {name} ({kind} {target}) failed: {exc}") from exc
