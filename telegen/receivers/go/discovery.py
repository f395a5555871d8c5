"""Find Go processes serving ``net/http/pprof`` on this host.

A process is Go when its executable (opened through ``/proc/PID/exe``, which
reaches files inside containers too) has a ``.go.buildinfo`` section or a Go
build-id note (name ``Go``, type 4; found in sections or, when section headers
are stripped, in PT_NOTE segments). Only Go processes are considered; every
other process's ports are never touched.

Its listening sockets are the LISTEN entries of ``/proc/PID/net/tcp{,6}``
whose inode is among the ``socket:[inode]`` links of ``/proc/PID/fd``. Only
loopback or any-address listeners in the agent's own network namespace are
reachable as 127.0.0.1 (``[::1]`` for a ``::1``-only listener); a port whose
``/debug/pprof/`` answers 200 with the pprof index becomes a target. Answers
are remembered per (pid, start time, port); a port that did not answer is
asked again after ``retry_scans`` scans.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cachetools import LRUCache

from telegen.procinfo import read_process
from telegen.procinfo.elfheaders import find_note, read_headers
from telegen.receivers.go.config import DEFAULT_PATH
from telegen.receivers.go.target import Target
from telegen.untrusted import Refused, open_regular

log = logging.getLogger(__name__)

_LISTEN = "0A"
_GO_NOTE_NAME = b"Go"
_GO_BUILDID_TYPE = 4


# -- is it Go? -------------------------------------------------------------------
def is_go_elf(path: str) -> bool:
    """Whether ``path`` (``/proc/PID/exe``: the executable itself, never a
    tenant's symlink) is a Go binary. Read with the struct-level header check
    (section and segment tables bounded, inside the file) and at most
    ``MAX_NOTES`` bytes per note place: the executable is the tenant's."""
    try:
        fd = open_regular(path, follow=True)      # /proc/PID/exe is a magic link
    except (Refused, OSError):
        return False
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
    """``is_go_elf`` per executable identity (device, inode, size, mtime)."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._cache: LRUCache[tuple[int, int, int, int], bool] = LRUCache(maxsize)
        self._lock = threading.Lock()

    def is_go(self, exe_path: str) -> bool:
        try:
            st = os.stat(exe_path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = is_go_elf(exe_path)
            with self._lock:
                self._cache[key] = hit
        return hit


# -- sockets ---------------------------------------------------------------------
@dataclass(frozen=True)
class Listener:
    address: str      # as text: 127.0.0.1, ::, ...
    port: int
    inode: int

    @property
    def scrape_host(self) -> str | None:
        """How to reach it from here, or None when it is not local/any."""
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv6Address) and ip.is_loopback:
            return "[::1]"
        if ip.is_loopback or ip.is_unspecified:
            return "127.0.0.1"
        return None


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def parse_listeners(text: str) -> list[Listener]:
    """LISTEN entries of a ``/proc/net/tcp`` or ``tcp6`` table."""
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        try:
            addr, port = fields[1].rsplit(":", 1)
            out.append(Listener(_hex_address(addr), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return out


def socket_inodes(pid: int, proc: str = "/proc") -> set[int]:
    inodes: set[int] = set()
    fd_dir = f"{proc}/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith("socket:[") and link.endswith("]"):
            try:
                inodes.add(int(link[8:-1]))
            except ValueError:
                pass
    return inodes


def listening_ports(pid: int, proc: str = "/proc") -> list[Listener]:
    """The process's own listening TCP sockets."""
    mine = socket_inodes(pid, proc)
    if not mine:
        return []
    found: list[Listener] = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/{pid}/net/{table}", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        found += [lst for lst in parse_listeners(text) if lst.inode in mine]
    return found


# -- process facts ---------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def boot_time_ns(proc: str = "/proc") -> int:
    for line in _read(f"{proc}/stat").splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    return 0


def process_start_ns(pid: int, proc: str = "/proc", boot_ns: int | None = None) -> int:
    """Unix ns the process started at (0 when unknown)."""
    stat = _read(f"{proc}/{pid}/stat")
    rest = stat.rpartition(")")[2].split()
    if len(rest) < 20:
        return 0
    ticks = int(rest[19])                       # field 22: starttime, clock ticks
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    base = boot_time_ns(proc) if boot_ns is None else boot_ns
    return base + ticks * 1_000_000_000 // hz


def _netns(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


# -- discovery -------------------------------------------------------------------
Probe = Callable[[str], bool]


class Discovery:
    def __init__(self, probe: Probe, *, proc: str = "/proc", retry_scans: int = 5,
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
        own_ns = _netns(f"{proc}/self/ns/net")
        me = os.getpid()
        candidates: list[tuple[int, int, Listener, str]] = []
        live: set[tuple[int, int]] = set()
        for name in os.listdir(proc):
            if not name.isdigit() or int(name) == me:
                continue
            pid = int(name)
            if not self._binaries.is_go(f"{proc}/{pid}/exe"):
                continue
            start = process_start_ns(pid, proc, boot)
            live.add((pid, start))
            if _netns(f"{proc}/{pid}/ns/net") != own_ns:
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
