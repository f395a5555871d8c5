"""How bench.fresh_host counts the agent's process tree (#21): each process's
own memory. A fork that did not exec shares its parent's pages copy-on-write
(only its private pages count); a process sharing its parent's address space
(a vfork child before exec) counts nothing; any other process its RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.fresh_host import _same_memory, resident_kb, rss_mb, tree_parents


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_a_fork_counts_its_private_pages_an_exec_its_rss() -> None:
    ballast = bytearray(64 << 20)            # 64 MB the parent owns (touched below)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                             # a worker: no exec, pages shared COW
        os.close(read)
        os.write(write, b"x")
        time.sleep(30)
        os._exit(0)
    os.close(write)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert os.read(read, 1) == b"x"
        me = os.getpid()
        assert _same_memory(me, me) and not _same_memory(pid, me)
        assert rss_kb(pid) > 60_000                 # RSS counts the shared ballast...
        assert resident_kb(pid, me) < 20_000        # ...its own pages do not
        deadline = time.monotonic() + 10
        while _cmdline_is_parent(other.pid, me) and time.monotonic() < deadline:
            time.sleep(0.05)                        # until the child has exec'd
        # an exec'd child counts its RSS (read twice: a starting interpreter may
        # map a page or two between the reads)
        assert abs(resident_kb(other.pid, me) - rss_kb(other.pid)) <= 64 and rss_kb(other.pid) > 0
        members = dict(tree_parents(me))
        assert members[me] == 0 and members[pid] == me and members[other.pid] == me
        mine = rss_mb([(me, 0)]) * 1000
        total = rss_mb([(p, parent) for p, parent in members.items()]) * 1000
        assert mine > 60_000 and total < mine + 40_000   # the ballast counted once
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        other.kill()
        other.wait()
        del ballast


def _cmdline_is_parent(pid: int, parent: int) -> bool:
    with open(f"/proc/{pid}/cmdline", "rb") as a, open(f"/proc/{parent}/cmdline", "rb") as b:
        return a.read() == b.read()
