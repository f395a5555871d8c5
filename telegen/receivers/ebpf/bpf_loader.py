"""telegen's BPF programs: options, sources, and loading them without LLVM here.

Options become ``-D`` cflags; the program text is the selected
``bpf/*.bpf.c`` files included in order, so the programs share one set of
maps (stack maps, filters, the event ring). BCC compiles and loads them in
a short-lived child (:mod:`telegen.bpfc`, the only module importing
``bcc``) that hands the descriptors over and exits; this process talks to
the kernel through :mod:`telegen.bpf`. What the child compiled is kept in
the start-up cache (:mod:`telegen.bpf.objcache`): a restart loads it here
with ``bpf()`` syscalls, no child, the verifier's time only. On a first
start, :func:`compile_early_for` (``telegen run``, once its config is
parsed) starts the child before the pipeline is built, so the compile
overlaps the agent's own start; the load takes that child over.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telegen.bpf import objcache
from telegen.bpf.compiled import ObjectError
from telegen.bpf.loader import LoadError, load_object
from telegen.bpf.objects import BpfObjects, ManifestError
from telegen.procinfo.agent import fd_info
from telegen.receivers.ebpf import bpf_child
from telegen.receivers.ebpf.bpf_child import BpfLoadError
from telegen.untrusted import Refusals, Refused

log = logging.getLogger(__name__)



def find_bpf_dir() -> Path:
    """The BPF sources: ``bpf/`` of the source tree (editable install, the
    Docker image), else ``<prefix>/share/telegen/bpf`` where a wheel install
    puts them (pyproject's data-files)."""
    tree = Path(__file__).resolve().parents[3] / "bpf"
    installed = Path(sys.prefix) / "share" / "telegen" / "bpf"
    return tree if (tree / "telegen.h").exists() or not (installed / "telegen.h").exists() \
        else installed


BPF_DIR = find_bpf_dir()
STACK_DEPTH = 127            # PERF_MAX_STACK_DEPTH: the kernel's own limit
MAX_PROCS = 16384
MAX_THREADS = 32768
EVENT_RING_PAGES = 64        # 256 KiB ring for control + timestamp events
USTACK_RING_PAGES = 1024     # 4 MiB ring for user stack copies (CFI unwinding)
USNAP_ENTRIES = 8192         # remembered stack copies (dedupe, bpf/telegen.h)
USNAP_BUDGET = 100           # new off-CPU stack copies per CPU per second
MAX_LIVE = 65536             # inuse memory: sampled live allocations tracked (bpf/memory.bpf.c)
MAX_SPILL = 4096             # per-thread counts when a counts map is full (bpf/telegen.h)
COMPILE_TIMEOUT_S = 120.0    # the child's compile + load + hand-over (1-3 s here, idle)
SPLIT_COMPILE = True         # the cpu sampler compiled (and sampling) first: BpfOptions.phases
# memory profiling's uprobe programs: loaded by the child, attached per process here
MEMORY_PROGRAMS = ("mem_malloc", "mem_calloc", "mem_realloc", "mem_posix_memalign",
                   "mem_aligned")
MEMORY_INUSE_PROGRAMS = ("mem_free", "mem_return")


@dataclass
class BpfOptions:
    cpu: bool = True
    off_cpu: bool = True
    sample_rate: int = 99
    max_stacks: int = 16384
    max_counts: int = 16384
    include_kernel: bool = False
    timestamps: bool = False
    filter_targets: bool = False
    watch_exec: bool = False
    self_profile: bool = False
    self_tgid: int = field(default_factory=os.getpid)
    off_cpu_threshold_ns: int = 0
    user_stacks: bool = False        # copy user stacks for CFI unwinding
    memory: bool = False
    memory_inuse: bool = False
    sample_every_bytes: int = 512 * 1024
    mutex: bool = False
    mutex_threshold_ns: int = 0

    def cflags(self) -> list[str]:
        flags = [
            f"-I{BPF_DIR}",
            "-Wno-visibility",
            f"-DMAX_STACKS={self.max_stacks}",
            f"-DMAX_COUNTS={self.max_counts}",
            f"-DMAX_THREADS={MAX_THREADS}",
            f"-DMAX_PROCS={MAX_PROCS}",
            f"-DSTACK_DEPTH={STACK_DEPTH}",
            f"-DEVENTS_PAGES={EVENT_RING_PAGES}",
            f"-DSELF_TGID={self.self_tgid}",
            f"-DOFFCPU_MIN_NS={self.off_cpu_threshold_ns}ULL",
            f"-DSAMPLE_EVERY_BYTES={self.sample_every_bytes}ULL",
            f"-DMAX_LIVE={MAX_LIVE}",
            f"-DMAX_SPILL={MAX_SPILL}",
            f"-DMUTEX_MIN_NS={self.mutex_threshold_ns}ULL",
        ]
        if self.user_stacks:
            flags += ["-DUSER_STACKS", f"-DUSTACK_PAGES={USTACK_RING_PAGES}",
                      f"-DUSNAP_ENTRIES={USNAP_ENTRIES}", f"-DUSNAP_BUDGET={USNAP_BUDGET}"]
        for name, on in (("SELF_PROFILE", self.self_profile),
                         ("FILTER_TARGETS", self.filter_targets),
                         ("WATCH_EXEC", self.watch_exec),
                         ("INCLUDE_KERNEL", self.include_kernel),
                         ("TIMESTAMPS", self.timestamps),
                         ("OFF_CPU", self.off_cpu), ("CPU", self.cpu),
                         ("MUTEX", self.mutex),
                         ("MEM_INUSE", self.memory and self.memory_inuse)):
            if on:
                flags.append(f"-D{name}")
        return flags

    def programs(self) -> dict[str, str]:
        """Programs the child loads but does not attach: name -> BPF program type
        (the agent attaches them itself, e.g. uprobes per process)."""
        names = MEMORY_PROGRAMS + (MEMORY_INUSE_PROGRAMS if self.memory_inuse else ()) \
            if self.memory else ()
        return dict.fromkeys(names, "kprobe")

    def source_files(self) -> list[str]:
        return (["cpu.bpf.c"] if self.cpu else []) + \
               (["offcpu.bpf.c"] if self.off_cpu else []) + \
               (["memory.bpf.c"] if self.memory else []) + \
               (["lock.bpf.c"] if self.mutex else []) + ["proc.bpf.c"]

    def phases(self) -> list[list[str]]:
        """The compiles the child makes, in order. With memory or mutex
        profiling the cpu sampler is compiled alone first and sampling starts
        while the rest compiles (their programs are most of the compile: 0.6
        of 2.4 s of CPU here); without, one compile (the split would cost a
        second front end, +0.4 s, to win 0.25 s). Same programs either way."""
        files = self.source_files()
        if SPLIT_COMPILE and self.cpu and (self.memory or self.mutex):
            return [files[:1], files[1:]]
        return [files]

    def source(self, files: list[str] | None = None) -> str:
        """The program text of ``files`` (default: every selected one)."""
        # Concatenated (header first), not #included: BCC rewrites map methods and
        # TRACEPOINT_PROBE only in the main text; the include guard skips the
        # programs' own `#include "telegen.h"`.
        return "\n".join((BPF_DIR / f).read_text()
                         for f in ["telegen.h", *(self.source_files() if files is None
                                                  else files)])


class LoadedBpf:
    """The loaded programs and maps, from the start-up cache (``cache``) or
    compiled by the short-lived child ``python -m telegen.bpfc``, held here
    by descriptor (``bpf`` offers BCC's table API,
    :class:`telegen.bpf.objects.BpfObjects`); ``close()`` detaches
    everything. No libbcc/LLVM is ever mapped in this process. A cache file
    refused or not loadable is counted in ``refusals`` (source
    ``bpf_cache``), removed and compiled again; ``cache_outcome`` says
    which way it went."""

    def __init__(self, options: BpfOptions, *, timeout_s: float = COMPILE_TIMEOUT_S,
                 cache: bool = True, refusals: Refusals | None = None) -> None:
        self.options = options
        t0 = time.monotonic()
        self.bpf: BpfObjects | None = None
        self.cache_outcome = "off"      # hit | miss | refused | load_failed | off
        self.kallsyms = ""              # what the compiler child did to /proc/kallsyms
        self._refusals = refusals or Refusals(None, log)
        directory = objcache.default_dir()
        key = objcache.cache_key(BPF_DIR, options.cflags(), dataclasses.asdict(options)) \
            if cache else ""
        if cache:
            self.bpf = self._from_cache(directory, key)
        if self.bpf is None:
            fds, manifest = _run_compiler(options, timeout_s, key)
            obj = manifest.pop("object", None)
            self.kallsyms = str(manifest.get("kallsyms", ""))
            if manifest.get("fallback"):    # loaded by BCC itself: works, not cacheable
                self._refusals.note("bpf_loader", "bcc_fallback", str(manifest["fallback"]))
            try:
                self.bpf = BpfObjects(fds, manifest)
            except Exception as exc:
                raise BpfLoadError(f"the compiler child's hand-over was refused: {exc}") from exc
            # not stored when a source changed during the compile (what was compiled
            # is then not what the key says)
            if cache and obj is not None and key == objcache.cache_key(
                    BPF_DIR, options.cflags(), dataclasses.asdict(options)):
                self._store(directory, key, obj)
        assert self.bpf is not None
        self.timings = {**self.bpf.timings, "total_s": time.monotonic() - t0}
        marks = {k: round(v - t0, 3) for k, v in self.bpf.marks.items()}
        log.info("BPF %s in %.2fs (%s): %d maps, %d programs, %d attachments; sampling "
                 "from %.2fs", "loaded from the start-up cache" if self.cache_outcome == "hit"
                 else "compiled and loaded by telegen.bpfc", self.timings["total_s"],
                 f"cache {self.cache_outcome}, " + (f"kallsyms {self.kallsyms}, " if
                                                    self.kallsyms else "") +
                 ", ".join(f"{k} {v}s" for k, v in marks.items()),
                 len(self.bpf.tables), len(self.bpf.funcs), len(self.bpf.links),
                 marks.get("sampling", -1.0))

    def _from_cache(self, directory: str, key: str) -> BpfObjects | None:
        """The programs loaded from the start-up cache, or None (miss, or a
        file refused or not loadable: counted, removed, compiled again)."""
        try:
            obj = objcache.read(directory, key)
        except Refused as exc:
            self._refusals.note_exc("bpf_cache", exc)
            self.cache_outcome = "refused"
            if exc.reason not in objcache.DIRECTORY_REASONS:   # nothing removed through it
                objcache.remove(directory, key)
            return None
        except OSError as exc:
            log.warning("BPF start-up cache %s unreadable: %s; compiling", directory, exc)
            self.cache_outcome = "refused"
            return None
        if obj is None:
            self.cache_outcome = "miss"
            return None
        try:
            fds, manifest = load_object(obj, self_tgid=self.options.self_tgid,
                                        sample_rate=self.options.sample_rate)
            bpf = BpfObjects(fds, manifest)
        except (LoadError, ObjectError, ManifestError, OSError) as exc:
            self._refusals.note("bpf_cache", "load_failed", str(exc))
            self.cache_outcome = "load_failed"
            objcache.remove(directory, key)
            return None
        self.cache_outcome = "hit"
        return bpf

    def _store(self, directory: str, key: str, obj: dict[str, Any]) -> None:
        try:
            objcache.write(directory, key, obj)
        except (OSError, ValueError, Refused) as exc:
            log.warning("BPF start-up cache not written to %s: %s", directory, exc)

    def table(self, name: str) -> Any:
        assert self.bpf is not None, "closed"
        return self.bpf[name.encode()]

    def set_seq(self, seq: int) -> None:
        ctl = self.table("control")
        ctl[ctl.Key(0)] = ctl.Leaf(seq & 0xFFFFFFFF)

    def program_ids(self) -> list[int]:
        """Kernel ids of our loaded programs (for bpf_stats run time)."""
        ids: list[int] = []
        for fn in getattr(self.bpf, "funcs", {}).values():
            info = _prog_id(fn.fd)
            if info:
                ids.append(info)
        return ids

    def close(self) -> None:
        bpf, self.bpf = getattr(self, "bpf", None), None
        if bpf is not None:
            try:
                bpf.close()
            except Exception:  # detaching must never raise at shutdown
                log.exception("BPF cleanup failed")


def options_for(c: Any, *, filtering: bool) -> BpfOptions:
    """The BPF options of an ``ebpf`` receiver's config (``EbpfConfig``);
    ``filtering``: its targets are pids or process names. The receiver's
    start and :func:`compile_early_for` must build the same options."""
    return BpfOptions(
        cpu=c.cpu, off_cpu=c.off_cpu, sample_rate=c.sample_rate, max_stacks=c.max_stacks,
        max_counts=c.max_stacks, include_kernel=c.include_kernel, timestamps=c.timestamps,
        filter_targets=filtering, watch_exec=bool(c.process_names),
        self_profile=c.self_profile, off_cpu_threshold_ns=int(c.off_cpu_threshold * 1e9),
        user_stacks=c.unwinding != "frame_pointer",
        memory=c.memory, memory_inuse=c.memory_mode == "inuse",
        sample_every_bytes=c.sample_every_bytes, mutex=c.mutex,
        mutex_threshold_ns=int(c.mutex_threshold * 1e9))


def compile_early_for(config: Any) -> int:
    """:func:`compile_early` for every ``ebpf`` receiver of a parsed config
    (``telegen.config.Config``) that a pipeline uses (only those start); how
    many children were started. Never raises: whatever fails here fails
    again, reported, at the receiver's start."""
    from telegen.component import Kind

    used = {cid for p in config.pipelines.values() for cid in p.receivers}
    started = 0
    for cid, c in config.components.get(Kind.RECEIVER, {}).items():
        if cid.type != "ebpf" or cid not in used:
            continue
        try:
            started += compile_early(options_for(c, filtering=bool(c.pids or c.name_pattern())))
        except Exception as exc:          # noqa: BLE001 - the receiver's start reports it
            log.debug("early BPF compile for %s not started: %s", cid, exc)
    return started


# compiler children started by compile_early, by start-up cache key
_EARLY: dict[str, bpf_child.Child] = {}


def compile_early(options: BpfOptions) -> bool:
    """Start the compiler child for ``options`` now when the start-up cache
    holds no object for them, so BCC's compile overlaps the rest of the
    agent's start (``telegen run`` calls this once its config is parsed,
    before it builds and starts the pipeline). ``LoadedBpf(options)`` takes
    the child over; one that no LoadedBpf takes is killed at the next one,
    or dies with the agent (PR_SET_PDEATHSIG). Whether a child was started."""
    key = objcache.cache_key(BPF_DIR, options.cflags(), dataclasses.asdict(options))
    if key in _EARLY or os.path.exists(os.path.join(objcache.default_dir(),
                                                    key + objcache.SUFFIX)):
        return False
    _EARLY[key] = bpf_child.spawn(dataclasses.asdict(options))
    return True


def _run_compiler(options: BpfOptions, timeout_s: float,
                  key: str = "") -> tuple[list[int], dict[str, Any]]:
    """Run the compiler child (the one compile_early started for ``key``,
    else a new one; any other early one is ended); its descriptors and
    manifest, or BpfLoadError with its stderr. The child is always reaped
    (killed past ``timeout_s``)."""
    child = _EARLY.pop(key, None) if key else None
    for other in list(_EARLY):
        bpf_child.end(_EARLY.pop(other))
    child = child or bpf_child.spawn(dataclasses.asdict(options))
    try:
        return bpf_child.receive(child, timeout_s)
    finally:
        child.close()


def _prog_id(fd: int) -> int | None:
    """The program id behind a BPF fd, from the agent's fdinfo (no bpf() needed)."""
    value = fd_info(fd, "prog_id")
    return int(value) if value and value.isdigit() else None
