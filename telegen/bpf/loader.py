"""Loading a compiled object (:mod:`telegen.bpf.compiled`) with plain
``bpf()`` syscalls: maps created (``BPF_MAP_CREATE``), each program's map
references and SELF_TGID written, programs loaded (``BPF_PROG_LOAD``, the
verifier's log on failure) and attached as BCC would have (tracepoints,
raw tracepoints, the per-CPU cpu-clock sampler).

Staged: the cpu-clock program is loaded and attached first, so sampling
starts before the verifier has seen the others (the sched_switch program
alone takes it longer than the sampler). Used by the compiler child right
after BCC's compile (on BCC's own maps) and by the agent on a start-up
cache hit (no child, no LLVM). Returns the descriptors and the manifest
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
    compiled.check(obj)
    t0 = time.monotonic()
    marks: dict[str, float] = {"load_start": t0}
    fds: list[int] = []
    owned: list[int] = []

    def index(fd: int) -> int:
        fds.append(fd)
        return len(fds) - 1

    try:
        maps: dict[str, Any] = {}
        by_name: dict[str, int] = {}
        for name, m in obj["maps"].items():
            if map_fds is not None and name in map_fds:
                fd = map_fds[name]
            else:
                try:
                    fd = sc.map_create(m["type"], m["key_size"], m["value_size"],
                                       m["max_entries"], m["flags"], m["kname"].encode())
                except OSError as exc:
                    raise LoadError(f"creating map {name} failed: {exc}") from exc
                owned.append(fd)
            by_name[name] = fd
            maps[name] = compiled.manifest_map(m, index(fd))
        marks["maps"] = time.monotonic()
        programs: dict[str, Any] = {}
        links: list[dict[str, Any]] = []
        # the sampler first: the first sample does not wait for the other programs
        order = sorted(obj["programs"].items(),
                       key=lambda kv: (kv[1]["attach"] or {}).get("kind") != "cpu_clock")
        for name, p in order:
            fd = _load(name, p, obj, by_name, self_tgid)
            owned.append(fd)
            programs[name] = {"fd": index(fd), "type": p["type"]}
            for what, link in _attach(name, p["attach"], fd, sample_rate):
                owned.append(link)
                links.append({"fd": index(link), "what": what})
            if (p["attach"] or {}).get("kind") == "cpu_clock":
                marks["sampling"] = time.monotonic()
        marks["loaded"] = time.monotonic()
    except BaseException:
        for fd in owned:
            os.close(fd)
        raise
    timings = {"load_s": marks["loaded"] - t0}
    return fds, {"maps": maps, "programs": programs, "links": links, "timings": timings,
                 "marks": marks}


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
