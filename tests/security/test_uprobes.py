"""The memory profiler's uprobes against a tenant: the allocator objects of a
process are opened by descriptor inside its root (a path swapped for a
symlink to root's files, or for a FIFO, is refused, counted, never opened),
and uprobes are attached through ``/proc/self/fd/N`` of the checked file."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.receivers.ebpf.uprobes import Uprobes
from telegen.testing import require
from telegen.testing.hostile_elf import OpenWatch, build, staging_dir
from telegen.testing.native import LiveProcess
from telegen.testing.tenant import as_nobody, nobody_dir, root_only_dir, run_as_nobody
from telegen.untrusted import Refusals

LOG = logging.getLogger("test.security.uprobes")
# an allocator of its own: what the memory profiler probes besides libc
ALLOCATOR_SOURCE = r"""
#include <stddef.h>
static char heap[1 << 16]; static size_t used;
void *malloc(size_t n) { void *p = heap + used; used += (n + 15) & ~15UL; return p; }
void free(void *p) { (void)p; }
"""


@pytest.fixture(scope="module")
def stage() -> Iterator[Path]:
    require.prerequisite(os.geteuid() == 0, "root (the agent runs as root)")
    d = staging_dir("telegen-uprobes-")
    build(ALLOCATOR_SOURCE, d / "liballoc.so", shared=True)
    os.chmod(d / "liballoc.so", 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _uprobes(refusals: Refusals) -> Uprobes:
    return Uprobes(None, inuse=True, wanted=lambda pid: True,
                   on_error=lambda exc: LOG.error("%s", exc), refusals=refusals)


@pytest.mark.parametrize("plant", ["file_symlink", "directory_symlink", "fifo"])
def test_allocator_path_swapped_by_the_tenant_is_never_opened(stage: Path, plant: str) -> None:
    victim = root_only_dir()
    build(ALLOCATOR_SOURCE.replace("1 << 16", "1 << 12"), victim / "liballoc.so", shared=True)
    os.chmod(victim / "liballoc.so", 0o600)
    home = nobody_dir("telegen-uprobe-tenant-")
    lib = home / "lib"
    run_as_nobody(["mkdir", str(lib)])
    run_as_nobody(["cp", str(stage / "liballoc.so"), str(lib / "liballoc.so")])
    path = str(lib / "liballoc.so")
    watch = OpenWatch([victim / "liballoc.so"])
    try:
        with LiveProcess(as_nobody([str(stage / "mapper"), path])) as tenant:
            refusals = Refusals(None, LOG)
            probes = _uprobes(refusals)
            # before the swap: the tenant's own allocator, held open, attached by fd
            (inode, obj, attach_path), = [o for o in probes._objects_of(tenant.pid)
                                          if o[1].path == path]
            assert {"malloc", "free"} <= set(obj.symbols)
            assert attach_path == f"/proc/self/fd/{obj.fd}"
            assert os.fstat(obj.fd).st_ino == inode[1]
            run_as_nobody(["rm", path])
            if plant == "directory_symlink":
                run_as_nobody(["rmdir", str(lib)])
                run_as_nobody(["ln", "-s", str(victim), str(lib)])
            elif plant == "file_symlink":
                run_as_nobody(["ln", "-s", str(victim / "liballoc.so"), path])
            else:
                run_as_nobody(["mkfifo", path])
            fresh = _uprobes(refusals)       # a new agent meeting the process after the swap
            t0 = time.monotonic()
            found = fresh._objects_of(tenant.pid)
            assert time.monotonic() - t0 < 5
            assert [o for o in found if o[1].path == path] == []
        assert watch.opened() == []
        want = "not_regular" if plant == "fifo" else "symlink"
        assert refusals.counts.get(("mapped_file", want), 0) == 1, refusals.counts
        os.close(obj.fd)
    finally:
        watch.close()
        shutil.rmtree(home)
        shutil.rmtree(victim)
