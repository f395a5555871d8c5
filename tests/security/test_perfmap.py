"""Perf maps against hostile local users, for real: maps forged by another
uid (``setpriv`` to ``nobody``), a sparse 100 GiB map, a process in its own
pid and mount namespace whose host pid has a forged map in the host's /tmp
and whose own map is an absolute symlink to a host file. Positive: a real
JIT (CPython 3.12 ``-X perf``) run as nobody is still named."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telegen.symbols import Symbolizer, SymbolizerOptions
from telegen.symbols.perfmap import perf_map_for
from telegen.testing import require
from telegen.testing.agent import wait_until
from telegen.testing.tenant import as_nobody, nobody_ids, run_as_nobody
from telegen.untrusted import Refusals

LOG = logging.getLogger("test.security.perfmap")


@pytest.fixture(autouse=True)
def _prerequisites() -> None:
    require.tools("setpriv", "unshare", "truncate", provider="util-linux and coreutils")
    require.prerequisite(os.geteuid() == 0, "root (the agent's own privilege)")


def _sleeper(argv_prefix: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*argv_prefix, "sleep", "120"], cwd="/")


@pytest.fixture
def cleanup_maps() -> Iterator[list[str]]:
    paths: list[str] = []
    yield paths
    for p in paths:
        if os.path.lexists(p):
            os.unlink(p)


def _symbolizer() -> Symbolizer:
    sym = Symbolizer(SymbolizerOptions(debuginfod_urls=[]))
    sym.refusals = Refusals(None, LOG)
    return sym


def test_a_map_forged_by_another_user_is_refused(cleanup_maps: list[str],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """nobody writes /tmp/perf-<pid>.map for a root process: names refused."""
    target = _sleeper([])
    path = f"/tmp/perf-{target.pid}.map"
    cleanup_maps.append(path)
    try:
        run_as_nobody(["sh", "-c", f"echo '1000 100 forged_by_nobody' > {path}"])
        sym = _symbolizer()
        with caplog.at_level(logging.DEBUG, logger=LOG.name):
            for _ in range(3):
                assert sym.jit(0x1010, target.pid).lines == ()
        assert sym.refusals.counts == {("perf_map", "wrong_owner"): 1}   # noted once
        assert sum(1 for r in caplog.records if r.levelno == logging.WARNING) == 1
    finally:
        target.kill()
        target.wait()


def test_a_sparse_huge_map_is_refused_unread(cleanup_maps: list[str]) -> None:
    target = _sleeper(as_nobody([]))
    path = f"/tmp/perf-{target.pid}.map"
    cleanup_maps.append(path)
    try:
        run_as_nobody(["truncate", "-s", "100G", path])
        assert os.stat(path).st_uid == nobody_ids()[0]
        refusals = Refusals(None, LOG)
        t0 = time.perf_counter()
        pm = perf_map_for(target.pid, refusals=refusals)
        took = time.perf_counter() - t0
        print(f"sparse 100 GiB perf map refused in {took * 1e3:.2f} ms")
        assert pm is not None and len(pm) == 0 and pm.refused == "too_large"
        assert refusals.counts == {("perf_map", "too_large"): 1}
        assert took < 0.5
    finally:
        target.kill()
        target.wait()


NAMESPACED = r"""
mount -t tmpfs tmpfs /tmp
echo '1000 100 real_jit_in_namespace' > /tmp/perf-$$.map
exec sleep 120
"""
SYMLINKED = r"""
mount -t tmpfs tmpfs /tmp
ln -s "$1" /tmp/perf-$$.map
exec sleep 120
"""


def _namespaced(script: str, *args: str, comm: str = "sleep"
                ) -> tuple[subprocess.Popen[bytes], int]:
    """A shell in new pid and mount namespaces (pid 1 there) with its own
    /tmp; returns the unshare process and the shell's host pid."""
    outer = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child",
                              "--mount-proc", "--propagation", "private",
                              "sh", "-c", script, "sh", *args])
    host_pid = 0

    def started() -> bool:
        nonlocal host_pid
        kids = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
        if kids and Path(f"/proc/{kids[0]}/comm").read_text().strip() == comm[:15]:
            host_pid = int(kids[0])
        return bool(host_pid)
    assert wait_until(started, 10, 0.05)
    return outer, host_pid


def test_namespaced_process_uses_its_own_map_never_the_hosts_tmp(
        cleanup_maps: list[str]) -> None:
    outer, pid = _namespaced(NAMESPACED)
    host_forgery = f"/tmp/perf-{pid}.map"          # the host's /tmp, the host pid
    cleanup_maps.append(host_forgery)
    try:
        Path(host_forgery).write_text("1000 100 forged_on_the_host\n")
        status = Path(f"/proc/{pid}/status").read_text()
        assert status.split("NSpid:")[1].split("\n")[0].split()[-1] == "1"
        sym = _symbolizer()
        assert wait_until(lambda: bool(sym.jit(0x1010, pid).lines), 10)
        assert sym.jit(0x1010, pid).lines[0].function == "real_jit_in_namespace"
    finally:
        outer.kill()
        outer.wait()


def test_an_absolute_symlink_in_a_namespace_does_not_reach_the_host() -> None:
    """Inside its own /tmp the process's map is a symlink to a host path:
    through /proc/PID/root an absolute symlink would resolve on the host."""
    fd, secret = tempfile.mkstemp(prefix="telegen-host-secret-", suffix=".map", dir="/root")
    os.write(fd, b"1000 100 host_secret\n")
    os.close(fd)
    outer, pid = _namespaced(SYMLINKED, secret)
    try:
        refusals = Refusals(None, LOG)
        assert wait_until(lambda: os.path.islink(f"/proc/{pid}/root/tmp/perf-1.map"), 10)
        pm = perf_map_for(pid, refusals=refusals)
        assert pm is not None and len(pm) == 0
        assert pm.lookup(0x1010) is None
        assert refusals.counts == {("perf_map", "symlink"): 1}
    finally:
        outer.kill()
        outer.wait()
        os.unlink(secret)


PY_JIT = r"""
mount -t tmpfs tmpfs /tmp
exec "$1" -X perf -c 'import time
def telegen_py_hot():
    return sum(range(1000))
while True:
    telegen_py_hot(); time.sleep(0.01)'
"""


def test_python_jit_in_its_own_namespaces_is_still_named() -> None:
    """A real JIT perf map (CPython 3.12 ``-X perf``) written in the
    process's own /tmp, in its own pid namespace (``perf-1.map``): named."""
    found = sorted(glob.glob("/root/.pyenv/versions/3.1[2-9]*/bin/python3.1*"))
    py = next((p for p in found if p[-1].isdigit()), None)
    require.prerequisite(py is not None, "pyenv's CPython >= 3.12")
    assert py is not None
    outer, pid = _namespaced(PY_JIT, py, comm=os.path.basename(py))
    try:
        path = f"/proc/{pid}/root/tmp/perf-1.map"
        entry: tuple[int, int, str] | None = None

        def mapped() -> bool:
            nonlocal entry
            for line in Path(path).read_text().splitlines():
                if "telegen_py_hot" in line:
                    s, n, name = line.split(" ", 2)
                    entry = (int(s, 16), int(n, 16), name)
            return entry is not None
        assert wait_until(mapped, 20, 0.1)
        assert entry is not None
        assert not os.path.exists(f"/tmp/perf-{pid}.map")       # nothing on the host
        sym = _symbolizer()
        res = sym.jit(entry[0] + entry[1] // 2, pid)
        assert res.lines and res.lines[0].function == entry[2]
        assert sym.refusals.counts == {}
    finally:
        outer.kill()
        outer.wait()


def test_many_big_maps_stay_within_the_byte_budget(cleanup_maps: list[str]) -> None:
    """Three JIT processes with 12 MiB maps each (under the per-map cap): the
    symbolizer keeps maps worth at most PERF_MAPS_BYTES (the least recently
    used dropped), not 128 maps of any size (~7 GB at the cap)."""
    from telegen.symbols.symbolizer import PERF_MAPS_BYTES

    procs = [_sleeper([]) for _ in range(3)]
    line = b"%x 10 jit_function_%d\n"
    try:
        for target in procs:
            path = f"/tmp/perf-{target.pid}.map"
            cleanup_maps.append(path)
            with open(path, "wb") as f:
                size, addr = 0, 0x10000
                while size < 12 << 20:
                    chunk = b"".join(line % (addr + 16 * i, i) for i in range(20000))
                    f.write(chunk)
                    size += len(chunk)
                    addr += 16 * 20000
        sym = _symbolizer()
        for target in procs:
            assert sym.jit(0x10000 + 16 * 5, target.pid).lines[0].function == "jit_function_5"
        held = list(sym._perfmaps.values())
        assert sum(pm.bytes_read for pm in held) <= PERF_MAPS_BYTES
        assert len(held) == 2 and sym._perfmaps.get(procs[0].pid) is None
    finally:
        for target in procs:
            target.kill()
            target.wait()
