"""The start-up cache (#21): a restart loads BCC's compiled object with
bpf() syscalls in the agent (no compiler child) and gets the same maps,
programs and attachments as the compile, sampling at once and still not
sampling the agent itself (SELF_TGID written at load); a tampered file or
an object the kernel refuses falls back to a full compile, is counted, and
leaves no descriptor behind."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telegen.bpf import objcache
from telegen.receivers.ebpf import bpf_child, bpf_loader
from telegen.receivers.ebpf.bpf_loader import BpfOptions, LoadedBpf
from telegen.telemetry import Registry, sum_series
from telegen.untrusted import Refusals

pytestmark = pytest.mark.timeout(900)     # BCC's compile takes minutes on a loaded machine
ALL_TYPES = BpfOptions(user_stacks=True, memory=True, memory_inuse=True, mutex=True)
BPF_KINDS = ("bpf-map", "bpf-prog", "bpf_link", "perf_event")
log = logging.getLogger(__name__)


def _bpf_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += any(k in os.readlink(f"/proc/self/fd/{fd}") for k in BPF_KINDS)
        except OSError:
            pass
    return n


def _shape(loaded: LoadedBpf) -> tuple[list[bytes], list[tuple[bytes, int]], int]:
    bpf = loaded.bpf
    assert bpf is not None
    return sorted(bpf.tables), sorted((n, p.type) for n, p in bpf.funcs.items()), len(bpf.links)


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A cache directory after one cold start with every profile type."""
    base = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TELEGEN_CACHE_DIR")
    os.environ["TELEGEN_CACHE_DIR"] = str(base)
    try:
        cold = LoadedBpf(ALL_TYPES)
        assert cold.cache_outcome == "miss"
        shape = _shape(cold)
        cold.close()
        yield base, shape
    finally:
        if old is None:
            os.environ.pop("TELEGEN_CACHE_DIR", None)
        else:
            os.environ["TELEGEN_CACHE_DIR"] = old


@pytest.fixture()
def cache(warmed: tuple[Path, Any], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    """A private copy of the warmed cache directory."""
    base, shape = warmed
    mine = tmp_path / "cache"
    shutil.copytree(base, mine)
    monkeypatch.setenv("TELEGEN_CACHE_DIR", str(mine))
    return mine, shape


def _no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any) -> Any:
        raise AssertionError("the compiler child was started on a cache hit")
    monkeypatch.setattr(bpf_loader, "_run_compiler", refuse)


def _pids_sampled(loaded: LoadedBpf) -> set[int]:
    pids = set()
    for name in ("cpu_counts0", "cpu_counts1"):
        pids |= {k.pid for k in loaded.table(name).keys()}
    return pids


def test_a_restart_loads_everything_from_the_cache_without_a_child_and_not_itself(
        cache: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _, shape = cache
    _no_child(monkeypatch)
    before = _bpf_fds()
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        t0 = time.monotonic()
        warm = LoadedBpf(ALL_TYPES)
        took = time.monotonic() - t0
        try:
            assert warm.cache_outcome == "hit"
            assert _shape(warm) == shape         # every map, program and attachment
            end = time.monotonic() + 1.0
            while time.monotonic() < end:        # this process burns CPU too
                sum(range(10000))
            pids = _pids_sampled(warm)
            assert busy.pid in pids
            assert os.getpid() not in pids, "SELF_TGID was not written into the programs"
            print(f"warm load {took:.2f}s, marks {warm.bpf.marks if warm.bpf else None}")
        finally:
            warm.close()
    finally:
        busy.kill()
        busy.wait()
    assert _bpf_fds() == before


def _registry_refusals() -> tuple[Registry, Refusals]:
    registry = Registry()
    return registry, Refusals(registry.for_component("receiver", "ebpf/t"), log)


def _only_file(directory: Path) -> Path:
    files = list((directory / "bpf").glob("*" + objcache.SUFFIX))
    assert len(files) == 1, files
    return files[0]


def test_a_tampered_cache_file_is_refused_counted_and_compiled_again(
        cache: tuple[Path, Any]) -> None:
    directory, shape = cache
    path = _only_file(directory)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    registry, refusals = _registry_refusals()
    loaded = LoadedBpf(ALL_TYPES, refusals=refusals)
    try:
        assert loaded.cache_outcome == "refused"
        assert _shape(loaded) == shape
    finally:
        loaded.close()
    assert sum_series(registry.snapshot(), "refused_inputs", source="bpf_cache",
                      reason="digest_mismatch") == 1
    again = LoadedBpf(ALL_TYPES)             # rewritten by the compile: a hit again
    try:
        assert again.cache_outcome == "hit"
    finally:
        again.close()


def test_an_object_the_kernel_refuses_falls_back_and_leaves_nothing_behind(
        cache: tuple[Path, Any]) -> None:
    """A well-formed object whose off-CPU program the verifier rejects (its
    last instruction cut: it runs off its end), after the sampler was
    already attached: the sampler is detached again, the file removed, the
    programs compiled."""
    directory, shape = cache
    path = _only_file(directory)
    key = path.name[:-len(objcache.SUFFIX)]
    obj = objcache.read(str(directory / "bpf"), key)
    assert obj is not None
    import base64
    p = obj["programs"]["tracepoint__sched__sched_switch"]
    insns = base64.b64decode(p["insns"])[:-8]
    p["insns"] = base64.b64encode(insns).decode()
    objcache.write(str(directory / "bpf"), key, obj)
    registry, refusals = _registry_refusals()
    before = _bpf_fds()
    loaded = LoadedBpf(ALL_TYPES, refusals=refusals)
    try:
        assert loaded.cache_outcome == "load_failed"
        assert _shape(loaded) == shape
    finally:
        loaded.close()
    assert _bpf_fds() == before
    assert sum_series(registry.snapshot(), "refused_inputs", source="bpf_cache",
                      reason="load_failed") == 1
    assert objcache.read(str(directory / "bpf"), key) is not None   # the compile's, valid
    assert ctypes.sizeof(ctypes.c_uint64) == 8


def _child_object(monkeypatch: pytest.MonkeyPatch, narrow: bool) -> tuple[dict[str, Any], str]:
    monkeypatch.setattr(bpf_child, "NARROW_KALLSYMS", narrow)
    fds, manifest = bpf_loader._run_compiler(ALL_TYPES, bpf_loader.COMPILE_TIMEOUT_S)
    for fd in fds:
        os.close(fd)
    return manifest["object"], manifest["kallsyms"]


def test_the_narrowed_kallsyms_compiles_the_same_programs_and_stays_in_the_child(
        monkeypatch: pytest.MonkeyPatch) -> None:
    narrowed, how = _child_object(monkeypatch, True)
    assert how.startswith("narrowed to "), how
    with open("/proc/kallsyms") as f:
        assert sum(1 for _ in f) > 1000             # the host's file is whole
    full, how = _child_object(monkeypatch, False)
    assert how == "full"
    assert narrowed == full                        # every instruction, map and attachment


def test_what_telegens_loader_cannot_load_bcc_loads_itself_counted_not_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's fallback (asked for here; in life a relocation or a kernel
    demand telegen.bpf.loader does not meet): every map, program and
    attachment as BCC makes them, the agent still excluded, nothing cached."""
    monkeypatch.setenv("TELEGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(bpf_child, "CHILD_LOADER", "bcc")
    registry, refusals = _registry_refusals()
    busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        loaded = LoadedBpf(ALL_TYPES, refusals=refusals)
        try:
            assert loaded.cache_outcome == "miss"
            tables, funcs, links = _shape(loaded)
            assert {b"cpu_counts0", b"off_counts0", b"mem_counts0", b"lock_counts0"} <= \
                set(tables)
            assert (b"on_cpu_sample", 7) in funcs and (b"mem_malloc", 2) in funcs
            assert links >= 5
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                sum(range(10000))
            pids = _pids_sampled(loaded)
            assert busy.pid in pids and os.getpid() not in pids
        finally:
            loaded.close()
    finally:
        busy.kill()
        busy.wait()
    assert sum_series(registry.snapshot(), "refused_inputs", source="bpf_loader",
                      reason="bcc_fallback") == 1
    assert not list((tmp_path / "bpf").glob("*" + objcache.SUFFIX))
