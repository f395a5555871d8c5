"""Find Go processes serving ``net/http/pprof`` on this host.

A process is Go when its executable (opened through its ``exe`` link in
/proc, which reaches files inside containers too) has a ``.go.buildinfo``
section or a Go build-id note (name ``Go``, type 4; found in sections or, when section headers
are stripped, in PT_NOTE segments). Only Go processes are considered; every
other process's ports are never touched.

Its listening sockets come from :mod:`telegen.procinfo.sockets`. Only
loopback or any-address listeners in the agent's own network namespace are
reachable as 127.0.0.1 (``[::1]`` for a ``::1``-only listener); a port whose
``/debug/pprof/`` answers 200 with the pprof index becomes a target. Answers
are remembered per (pid, start time, port); a port that did not answer is
asked again after ``retry_scans`` scans.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cachetools import LRUCache

from telegen.procinfo import PROC, list_pids, read_process
from telegen.procinfo.elfheaders import find_note, read_headers
from telegen.procinfo.procfs import SELF, exe_stat, namespace_inode, open_exe
from telegen.procinfo.sockets import Listener, listening_ports
from telegen.procinfo.times import boot_time_ns, start_time_ns
from telegen.receivers.go.config import DEFAULT_PATH
from telegen.receivers.go.target import Target
from telegen.untrusted import Refused, open_regular

log = logging.getLogger(__name__)

_GO_NOTE_NAME = b"Go"
_GO_BUILDID_TYPE = 4


# -- is it Go? -------------------------------------------------------------------
def is_go_elf(path: str) -> bool:
    """Whether the file at ``path`` is a Go binary (see :func:`is_go_fd`)."""
    try:
        fd = open_regular(path, follow=True)
    except (Refused, OSError):
        return False
    return is_go_fd(fd)


def is_go_process(pid: int, proc: str = PROC) -> bool:
    """Whether ``pid``'s executable itself (never a tenant's symlink) is a Go binary."""
    try:
        fd = open_exe(pid, proc)
    except (Refused, OSError):
        return False
    return is_go_fd(fd)


def is_go_fd(fd: int) -> bool:
    """Whether the file open on ``fd`` is a Go binary; closes ``fd``. Read
    with the struct-level header check (section and segment tables bounded,
    inside the file) and at most ``MAX_NOTES`` bytes per note place: the
    executable is the tenant's."""
    try:
        headers = read_headers(fd)
        if headers.section(".go.buildinfo") or headers.section(".note.go.buildid"):
            return True
        return find_note(fd, headers, _GO_NOTE_NAME, _GO_BUILDID_TYPE) is not None
    except (Refused, OSError, struct.error, ValueError):
        return False
    finally:
        os.close(fd)


class GoBinaryCache:
    """``is_go_process`` per executable identity (device, inode, size, mtime)."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._cache: LRUCache[tuple[int, int, int, int], bool] = LRUCache(maxsize)
        self._lock = threading.Lock()

    def is_go(self, pid: int, proc: str = PROC) -> bool:
        st = exe_stat(pid, proc)
        if st is None:
            return False
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = is_go_process(pid, proc)
            with self._lock:
                self._cache[key] = hit
        return hit


# -- discovery -------------------------------------------------------------------
Probe = Callable[[str], bool]


class Discovery:
    def __init__(self, probe: Probe, *, proc: str = PROC, retry_scans: int = 5,
                 max_probes: int = 8) -> None:
        self._probe = probe
        self._proc = proc
        self._retry = retry_scans
        self._binaries = GoBinaryCache()
        self._answers: dict[tuple[int, int, int], tuple[bool, int]] = {}  # -> (ok, scan no.)
        self._facts: dict[tuple[int, int], Target] = {}   # (pid, start) -> template
        self._scan_no = 0
        self._pool = ThreadPoolExecutor(max_probes, thread_name_prefix="receiver-go-probe")
        self.skipped_netns = 0

    def scan(self) -> list[Target]:
        """Go processes with a pprof port, as targets (one per process and port)."""
        self._scan_no += 1
        proc = self._proc
        boot = boot_time_ns(proc)
        own_ns = namespace_inode(SELF, "net", proc)
        me = os.getpid()
        candidates: list[tuple[int, int, Listener, str]] = []
        live: set[tuple[int, int]] = set()
        for pid in list_pids(proc):
            if pid == me:
                continue
            if not self._binaries.is_go(pid, proc):
                continue
            start = start_time_ns(pid, proc, boot)
            live.add((pid, start))
            if namespace_inode(pid, "net", proc) != own_ns:
                self.skipped_netns += 1
                continue
            for lst in listening_ports(pid, proc):
                host = lst.scrape_host
                if host is not None:
                    candidates.append((pid, start, lst, f"http://{host}:{lst.port}{DEFAULT_PATH}"))
        self._answers = {k: v for k, v in self._answers.items() if (k[0], k[1]) in live}
        self._facts = {k: v for k, v in self._facts.items() if k in live}
        to_probe = [c for c in candidates if self._needs_probe(c[0], c[1], c[2].port)]
        results = list(self._pool.map(lambda c: self._safe_probe(c[3]), to_probe))
        for (pid, start, lst, _), ok in zip(to_probe, results, strict=True):
            self._answers[(pid, start, lst.port)] = (ok, self._scan_no)
        targets: dict[str, Target] = {}
        for pid, start, lst, url in candidates:
            if self._answers.get((pid, start, lst.port), (False, 0))[0] and url not in targets:
                targets[url] = self._target(pid, start, url)
        return list(targets.values())

    def _needs_probe(self, pid: int, start: int, port: int) -> bool:
        seen = self._answers.get((pid, start, port))
        return seen is None or (not seen[0] and self._scan_no - seen[1] >= self._retry)

    def _safe_probe(self, url: str) -> bool:
        try:
            return self._probe(url)
        except Exception as exc:  # a probe must never break the scan
            log.debug("probe %s failed: %s", url, exc)
            return False

    def _target(self, pid: int, start: int, url: str) -> Target:
        template = self._facts.get((pid, start))
        if template is None:
            info = read_process(pid, proc=self._proc)
            exe = info.exe if info else ""
            name = (exe.rsplit("/", 1)[-1] if exe else "") or (info.comm if info else "")
            template = Target(url="", pid=pid, start_ns=start, process_name=name,
                              executable=exe, container_id=info.container_id if info else "")
            self._facts[(pid, start)] = template
        return Target(url=url, pid=pid, start_ns=start, process_name=template.process_name,
                      executable=template.executable, container_id=template.container_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
