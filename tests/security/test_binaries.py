"""The files a profiled process maps, as the root agent reaches them.

Every test runs a real tenant process (``mapper``: mmaps files executable,
as a container's root in its own mount namespace or as ``nobody`` on the
host) and goes through the real symbolizer / unwind-table / build-id paths.
inotify watches the root-only files the tenant aims at: none may be opened.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.procinfo import MapEntry, open_mapped, read_process
from telegen.symbols import Symbolizer, SymbolizerOptions
from telegen.symbols.elf import read_build_id
from telegen.testing import require
from telegen.testing.agent import wait_until
from telegen.testing.hostile_elf import (
    TENANT_LIB_SOURCE,
    OpenWatch,
    add_section,
    build,
    debuglink_section,
    mapping_of,
    staging_dir,
    symbol_offset,
)
from telegen.testing.native import LiveProcess
from telegen.testing.tenant import as_nobody, nobody_dir, nobody_ids, root_only_dir, run_as_nobody
from telegen.untrusted import Refusals
from telegen.unwind import TableCache
from telegen.unwind.build import build_table

LOG = logging.getLogger("test.security.binaries")
SECRET_LIB_SOURCE = "int secret_function_xyz(int x) { return x * 11; }\n"


@pytest.fixture(scope="module")
def stage() -> Iterator[Path]:
    """Programs and libraries, outside /tmp (the namespaced tenant mounts its own)."""
    require.prerequisite(os.geteuid() == 0, "root (the agent runs as root)")
    d = staging_dir("telegen-binaries-")
    build(TENANT_LIB_SOURCE, d / "libtenant.so", shared=True)
    build(TENANT_LIB_SOURCE, d / "libnolink.so", shared=True,
          flags=("-O1", "-Wl,--build-id=none"))
    for f in d.iterdir():
        os.chmod(f, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def victim(stage: Path) -> Iterator[Path]:
    """A root-only directory holding a real ELF under the tenant's file names."""
    d = root_only_dir()
    build(SECRET_LIB_SOURCE, d / "libtenant.so", shared=True)
    for name in ("libnolink.so", "libnolink.debug"):
        shutil.copy(d / "libtenant.so", d / name)
    for f in d.glob("lib*"):
        os.chmod(f, 0o600)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def symbolizer(refusals: Refusals, tmp: Path) -> Symbolizer:
    empty = tmp / "no-debug"
    empty.mkdir(exist_ok=True)
    return Symbolizer(SymbolizerOptions(debug_dirs=(str(empty),), debuginfod_urls=[]),
                      refusals=refusals)


def resolve(sym: Symbolizer, pid: int, path: str, offset: int, build_id: str = "",
            timeout: float = 20.0, m: MapEntry | None = None) -> tuple[str, float]:
    """The function named at file ``offset`` of ``path`` in ``pid``; fails when the
    look-up does not return within ``timeout`` (a hang under the lock)."""
    m = m or mapping_of(pid, path)
    out: list[str] = []

    def run() -> None:
        res = sym.native(m.start - m.offset + offset, file=path, start=m.start,
                         offset=m.offset, build_id=build_id, pid=pid)
        out.append(res.lines[0].function if res.lines else "")
    t0 = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"symbolizing {path} still running after {timeout}s"
    return out[0], time.monotonic() - t0


SWAP_IN_NAMESPACE = r"""
mount -t tmpfs tmpfs /tmp
mkdir /tmp/lib && cp "$1/libtenant.so" /tmp/lib/libtenant.so
"$1/mapper" /tmp/lib/libtenant.so > "$2" &
echo $! > "$2.pid"
while ! grep -q ready "$2" 2>/dev/null; do sleep 0.02; done
mount -t tmpfs tmpfs /tmp/lib && ln -s "$3/libtenant.so" /tmp/lib/libtenant.so
echo swapped > "$2.swapped"
wait
"""


def test_container_path_swapped_for_an_absolute_symlink_stays_in_the_container(
        stage: Path, victim: Path, tmp_path: Path) -> None:
    """A container's root maps /tmp/lib/libtenant.so, then mounts over /tmp/lib
    a directory where that name is an absolute symlink to a root-only host
    ELF (its maps still show the path, not deleted). Through /proc/PID/root
    the symlink would resolve on the host: the agent must read the mapped
    file itself, never the host's."""
    status = stage / f"ns-{os.getpid()}"
    outer = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              SWAP_IN_NAMESPACE, "sh", str(stage), str(status), str(victim)])
    watch = OpenWatch([victim / "libtenant.so"])
    try:
        assert wait_until(lambda: Path(f"{status}.swapped").exists(), 20, 0.05)
        pid = int(Path(f"{status}.pid").read_text())
        assert os.path.islink(f"/proc/{pid}/root/tmp/lib/libtenant.so")
        refusals = Refusals(None, LOG)
        info = read_process(pid)                       # build-ids of its mappings
        assert info is not None
        name, _ = resolve(symbolizer(refusals, tmp_path), pid, "/tmp/lib/libtenant.so",
                          symbol_offset(stage / "libtenant.so", "tenant_function_abc"))
        assert name == "tenant_function_abc"           # the mapped file, via map_files
        mapped = open_mapped(pid, "/tmp/lib/libtenant.so", mapping_of(
            pid, "/tmp/lib/libtenant.so").start, refusals=refusals)
        assert mapped is not None
        with mapped:
            assert len(TableCache(disk=False).get(mapped, "")) > 0
        assert watch.opened() == []                    # the host file: never opened
        assert refusals.counts.get(("mapped_file", "symlink"), 0) >= 1
    finally:
        watch.close()
        outer.kill()
        subprocess.run(["pkill", "-KILL", "-P", str(outer.pid)], check=False)
        outer.wait()
        for suffix in ("", ".pid", ".swapped"):
            Path(f"{status}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("plant", ["directory_symlink", "file_symlink", "fifo"])
def test_host_path_of_a_tenant_swapped_after_mapping(stage: Path, victim: Path, tmp_path: Path,
                                                     plant: str) -> None:
    """nobody maps its library from its own directory, deletes it (its maps
    show ``(deleted)``, which procinfo strips) and plants the same path again:
    the directory or the file as a symlink to root's files, or the file as a
    FIFO. The agent reads the mapping, never the planted path."""
    home = nobody_dir("telegen-tenant-")
    lib = home / "lib"
    run_as_nobody(["mkdir", str(lib)])
    run_as_nobody(["cp", str(stage / "libtenant.so"), str(lib / "libtenant.so")])
    path = str(lib / "libtenant.so")
    watch = OpenWatch([victim / "libtenant.so"])
    try:
        with LiveProcess(as_nobody([str(stage / "mapper"), path])) as tenant:
            run_as_nobody(["rm", path])
            if plant == "directory_symlink":
                run_as_nobody(["rmdir", str(lib)])
                run_as_nobody(["ln", "-s", str(victim), str(lib)])
            elif plant == "file_symlink":
                run_as_nobody(["ln", "-s", str(victim / "libtenant.so"), path])
            else:
                run_as_nobody(["mkfifo", path])
            refusals = Refusals(None, LOG)
            info = read_process(tenant.pid)
            assert info is not None
            name, took = resolve(symbolizer(refusals, tmp_path), tenant.pid, path,
                                 symbol_offset(stage / "libtenant.so", "tenant_function_abc"))
            assert name == "tenant_function_abc" and took < 10
        assert watch.opened() == []
        want = "not_regular" if plant == "fifo" else "symlink"
        assert refusals.counts.get(("mapped_file", want), 0) >= 1, refusals.counts
    finally:
        watch.close()
        shutil.rmtree(home)


@pytest.mark.parametrize("attack", ["absolute", "climbing", "planted_symlink", "planted_fifo",
                                    "planted_symlink_after_exit"])
def test_debuglink_cannot_name_a_host_file_or_hang_the_agent(
        stage: Path, victim: Path, tmp_path: Path, attack: str) -> None:
    """A binary without build-id whose .gnu_debuglink names /proc/kcore (CRC
    read forever), climbs out of its directory to a root-only ELF, or names a
    file the tenant planted next to it as a symlink to /proc/kcore or a FIFO —
    also once the tenant has exited (its library is then read on the host)."""
    home = nobody_dir("telegen-debuglink-")
    name = {"absolute": b"/proc/kcore",
            "climbing": b"../" * 12 + str(victim / "libnolink.debug").lstrip("/").encode()
            }.get(attack, b"libnolink.debug")
    crafted = add_section(stage / "libnolink.so", ".gnu_debuglink",
                          debuglink_section(name, 0x12345678), tmp_path / "libnolink.so")
    shutil.copy(crafted, home / "libnolink.so")
    os.chown(home / "libnolink.so", *nobody_ids())
    os.chmod(home / "libnolink.so", 0o755)
    if attack.startswith("planted_symlink"):
        run_as_nobody(["ln", "-s", "/proc/kcore", str(home / "libnolink.debug")])
    elif attack == "planted_fifo":
        run_as_nobody(["mkfifo", str(home / "libnolink.debug")])
    assert read_build_id(str(home / "libnolink.so")) == ""
    watch = OpenWatch([victim / "libnolink.debug"])
    try:
        path = str(home / "libnolink.so")
        refusals = Refusals(None, LOG)
        offset = symbol_offset(stage / "libnolink.so", "tenant_function_abc")
        with LiveProcess(as_nobody([str(stage / "mapper"), path])) as tenant:
            m = mapping_of(tenant.pid, path)
            if not attack.endswith("_after_exit"):
                fn, took = resolve(symbolizer(refusals, tmp_path), tenant.pid, path, offset)
        if attack.endswith("_after_exit"):
            assert not os.path.exists(f"/proc/{tenant.pid}")
            fn, took = resolve(symbolizer(refusals, tmp_path), tenant.pid, path, offset, m=m)
        assert fn == "tenant_function_abc"             # its own symbol table still names it
        assert took < 10
        assert watch.opened() == []
        want = {"absolute": ("debuglink", "debuglink_path"),
                "climbing": ("debuglink", "debuglink_path"),
                "planted_symlink": ("debug_file", "symlink"),
                "planted_symlink_after_exit": ("debug_file", "symlink"),
                "planted_fifo": ("debug_file", "not_regular")}[attack]
        assert refusals.counts.get(want, 0) == 1, refusals.counts
    finally:
        watch.close()
        shutil.rmtree(home)


def _libc() -> tuple[str, str]:
    with open("/proc/self/maps") as f:
        path = next(line.split()[-1] for line in f if "/libc.so" in line)
    return path, read_build_id(path)


def _function_offset(lib: str, name: str) -> int:
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True,
                         check=True).stdout
    value = next(int(v, 16) for v, _k, n in (ln.split()[:3] for ln in out.splitlines()
                                             if len(ln.split()) >= 3) if n.split("@")[0] == name)
    return value + 4          # libc's text: file offset == address


@pytest.mark.parametrize("first", ["forgery", "libc"])
def test_a_copied_build_id_does_not_poison_libc(stage: Path, tmp_path: Path, first: str) -> None:
    """nobody maps a library linked with libc's build-id. Whichever is seen
    first, libc's frames keep libc's names and libc gets libc's unwind table —
    in memory and from the disk cache of a later run — and the forgery keeps
    its own; the reuse is counted."""
    libc, libc_id = _libc()
    forged = build(TENANT_LIB_SOURCE, tmp_path / "libforged.so", shared=True,
                   flags=("-O1", f"-Wl,--build-id=0x{libc_id}"))
    assert read_build_id(str(forged)) == libc_id
    home = nobody_dir("telegen-forged-")
    shutil.copy(forged, home / "libforged.so")
    os.chmod(home / "libforged.so", 0o755)
    path = str(home / "libforged.so")
    disk = tmp_path / "unwind-cache"
    real_table = list(build_table(libc).starts)
    try:
        with LiveProcess(as_nobody([str(stage / "mapper"), path])) as tenant:
            refusals = Refusals(None, LOG)
            sym = symbolizer(refusals, tmp_path)
            order = [("forgery", tenant.pid, path, symbol_offset(forged, "tenant_function_abc")),
                     ("libc", os.getpid(), libc, _function_offset(libc, "nanosleep"))]
            if first == "libc":
                order.reverse()
            names = {who: resolve(sym, pid, p, off, libc_id)[0] for who, pid, p, off in order}
            assert names["forgery"] == "tenant_function_abc"
            assert names["libc"].lstrip("_") in ("nanosleep", "libc_nanosleep")
            assert refusals.counts.get(("build_id", "content_mismatch")) == 1

            tables = {}
            for who, pid, p, _off in order:       # one agent run each: the disk cache between
                mapped = open_mapped(pid, p, mapping_of(pid, p).start)
                assert mapped is not None
                with mapped:
                    tables[who] = list(TableCache(cache_dir=disk).get(mapped, libc_id).starts)
            mapped = open_mapped(os.getpid(), libc, mapping_of(os.getpid(), libc).start)
            assert mapped is not None
            with mapped:                          # a third run: libc from the disk cache
                again = TableCache(cache_dir=disk)
                assert list(again.get(mapped, libc_id).starts) == real_table
                assert again.loaded == 1
        assert tables["libc"] == real_table
        assert tables["forgery"] != real_table
        assert len(list(disk.glob(f"{libc_id}-*.unw"))) == 2
    finally:
        shutil.rmtree(home)


def test_a_build_id_that_is_not_hex_never_becomes_a_path(victim: Path, tmp_path: Path) -> None:
    """A build-id arriving with a frame (``ab`` + an absolute path) would
    have been joined into ``<debug_dir>/.build-id/ab/<path>.debug`` — the
    path itself: a root-only ELF named ``libtenant.so.debug``."""
    planted = victim / "libtenant.so.debug"
    shutil.copy(victim / "libtenant.so", planted)
    bad = "ab" + str(victim / "libtenant.so")
    watch = OpenWatch([planted])
    try:
        refusals = Refusals(None, LOG)
        sym = symbolizer(refusals, tmp_path)
        res = sym.native(0x1104, file="/nonexistent/lib.so", start=0, offset=0, build_id=bad,
                         pid=0)
        assert not res.lines
        table = TableCache(disk=False, refusals=refusals).get("/nonexistent/lib.so", bad)
        assert not table.has_cfi
        assert watch.opened() == []
        assert refusals.counts.get(("build_id", "bad_build_id")) == 2
    finally:
        watch.close()
