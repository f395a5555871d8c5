"""The background builder child: unwind tables built outside the agent.

``main(FD)`` of this module runs in a child (``python -c``) started once by the agent
(:class:`BuilderChild`, on the first table it needs) and lowers itself to
``nice 19``. For each request — a JSON line with the object's descriptor
passed over the unix socket (``SCM_RIGHTS``) — it forks a worker that sets
``RLIMIT_CPU`` (the object's CPU budget: SIGXCPU, then SIGKILL one second
later) and ``RLIMIT_AS`` (its address space now plus the memory budget),
maps the CFI section, decodes it (:func:`telegen.unwind.build.table_from_fd`)
and writes the table file into the cache directory (temporary file +
rename), then exits. The child names the worker first (``{"worker": pid}``:
the agent's own work, which the ebpf receiver does not profile,
:mod:`telegen.procinfo.agent`), then replies with a JSON line: ``built``,
``rejected`` (``cpu_time``, ``memory``, ``wall_time``, ``crashed``) or
``failed`` (not an ELF file, no readable CFI), plus the worker's CPU time and
peak RSS from ``wait4``.

So a huge or hostile binary costs at most its budget of one core at the
lowest priority, and a decoder crash (a mapped file truncated under it:
SIGBUS) ends one worker, never the agent. The child holds no state between
requests; it exits when the agent's end of the socket closes. The agent
closes it after :data:`IDLE_EXIT_S` without a request
(:meth:`BuilderChild.close_if_idle`, from the cache's background thread) and
reaps it at once: steady state costs no process, not even a zombie. The child
also leaves on its own after :data:`CHILD_IDLE_EXIT_S` without a request (an
agent that stopped asking); the agent then reaps it at its next idle check.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from telegen.index.header import write_atomic
from telegen.procinfo.agent import address_space_bytes, child_ended, child_started
from telegen.untrusted import Refused
from telegen.unwind.build import table_from_fd
from telegen.unwind.cfi import CfiBomb

# The child loads this module and what it imports, not the __init__ of the
# packages around them (telegen.unwind's imports the cache and the unwinder,
# telegen.symbols' the symbolizer and HTTP clients): ~0.3 s of CPU less per start.
CHILD_BOOT = """
import os, sys, types
sys.path[0] = sys.argv[2]       # the agent's own telegen, never one in a working directory
import telegen
for name in ("unwind", "procinfo", "symbols"):
    package = types.ModuleType("telegen." + name)
    package.__path__ = [os.path.join(os.path.dirname(telegen.__file__), name)]
    sys.modules["telegen." + name] = package
from telegen.unwind.builder import main
main(int(sys.argv[1]))
"""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])   # the directory holding telegen/
MAX_MESSAGE = 1 << 16
IDLE_EXIT_S = 30.0        # the agent ends the child after this long without a request
CHILD_IDLE_EXIT_S = 4 * IDLE_EXIT_S   # the child's own limit, should the agent not
_EXIT_BUILT, _EXIT_MEMORY, _EXIT_REFUSED, _EXIT_ERROR, _EXIT_MISMATCH = 0, 3, 4, 5, 6
_WALL_FACTOR, _WALL_EXTRA_S = 4, 30.0


@dataclass(frozen=True)
class BuildResult:
    status: str            # built / rejected / failed
    reason: str = ""       # rejected: cpu_time, memory, wall_time, crashed; failed: why
    cpu_s: float = 0.0     # the worker's user + system CPU time
    max_rss: int = 0       # the worker's peak resident set (bytes)


class BuilderChild:
    """The agent's side: one child, started lazily, restarted if it dies.
    :meth:`build` blocks the calling thread (the cache's background thread,
    never the pipeline) until the table file is written or refused."""

    def __init__(self, *, cpu_s: float, memory_bytes: int, idle_s: float = IDLE_EXIT_S) -> None:
        self.cpu_s = max(1, int(cpu_s + 0.999))
        self.memory_bytes = memory_bytes
        self.idle_s = idle_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.started = 0          # children started (1 unless one died)
        self.idle_exits = 0       # children ended for being idle
        self._last_used = time.monotonic()

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self._close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", CHILD_BOOT, str(theirs.fileno()), _PACKAGE_ROOT],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, close_fds=True, process_group=0, cwd="/")
            child_started(self._proc.pid)    # the agent's own work: not profiled
        finally:
            theirs.close()
        self._sock = ours
        self.started += 1
        return ours

    def build(self, fd: int, *, name: str, out_dir: Path, file_name: str, key: str,
              build_id: str) -> BuildResult:
        with self._lock:
            request = json.dumps({"name": name[:4096], "out": str(out_dir), "file": file_name,
                                  "key": key, "build_id": build_id, "cpu_s": self.cpu_s,
                                  "memory": self.memory_bytes}).encode() + b"\n"
            reply = b""
            for _attempt in range(2):      # once more if the child just left, idle
                try:
                    sock = self._ensure()
                    socket.send_fds(sock, [request], [fd])
                    reply = _read_reply(sock)
                except OSError as exc:
                    self._close()
                    return BuildResult("failed", f"builder child: {exc}")
                if reply:
                    break
                idle_exit = self._proc is not None and self._proc.wait(5) == 0
                self._close()
                if not idle_exit:
                    return BuildResult("failed", "builder child exited")
            self._last_used = time.monotonic()
            if not reply:
                return BuildResult("failed", "builder child exited")
            got = json.loads(reply)
            return BuildResult(str(got["status"]), str(got.get("reason", "")),
                               float(got.get("cpu_s", 0.0)), int(got.get("max_rss", 0)))

    def start(self) -> None:
        """Start the child ahead of the first request (its imports run at the
        agent's priority; then it lowers itself)."""
        with self._lock:
            self._ensure()
            self._last_used = time.monotonic()

    def close_if_idle(self) -> bool:
        """End the child (closing its socket: it exits at once) and reap it
        when it has served nothing for :attr:`idle_s`, or reap it when it left by
        itself. True when a child was ended or reaped; the next
        :meth:`build` starts another."""
        with self._lock:
            if self._proc is None:
                return False
            if self._proc.poll() is None and time.monotonic() - self._last_used < self.idle_s:
                return False
            self._close()
            self.idle_exits += 1
            return True

    def boost(self, on: bool) -> bool:
        """While the pipeline waits for a table (at most one window), the child
        and its worker run at the agent's own priority; back to 19 after.
        False when not permitted (the agent is not root) or no child."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            nice = os.getpriority(os.PRIO_PROCESS, 0) if on else 19
            os.setpriority(os.PRIO_PGRP, proc.pid, nice)
        except OSError:
            return False
        return True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            child_ended(self._proc.pid)
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._close()


def drop_page_cache(path: Path) -> None:
    """Write ``path`` out and drop it from the page cache. A file written in
    one ``write`` sits in the page cache in large folios (2 MB on ext4,
    kernel 6.18), and a reader that maps it gets a whole folio resident per
    page it touches: a few look-ups made a 12 MB table wholly resident in the
    agent. Read back from disk, a touch maps 64 KiB (readahead), 4 KiB under
    ``MADV_RANDOM``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        os.fdatasync(fd)                    # dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_reply(sock: socket.socket) -> bytes:
    """The child's reply line to one request (b"" if it exited). Before it,
    the child names the worker it forked (``{"worker": pid}``): the agent's
    own work, not profiled while it runs (procinfo.agent)."""
    buf = b""
    worker = 0
    try:
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.startswith(b'{"worker":'):
                    return line + b"\n"
                if not worker:
                    try:
                        worker = int(json.loads(line)["worker"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if worker > 1:
                        child_started(worker)
                    else:
                        worker = 0
            chunk = sock.recv(4096)
            if not chunk:
                return b""
            buf += chunk
            if len(buf) > MAX_MESSAGE:
                raise OSError("reply too long")
    finally:
        if worker:
            child_ended(worker)


# -- the child ----------------------------------------------------------------------
def main(sock_fd: int) -> None:
    os.setpriority(os.PRIO_PGRP, 0, 19)     # its own process group: itself and workers
    sock = socket.socket(fileno=sock_fd)
    buf = b""
    fds: list[int] = []
    while True:
        if not buf and not select.select([sock], [], [], CHILD_IDLE_EXIT_S)[0]:
            return                                  # idle: the agent restarts us when needed
        msg, got_fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
        if not msg:
            return
        buf += msg
        fds += got_fds
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            fd = fds.pop(0) if fds else -1
            try:
                reply = _serve(json.loads(line), fd, sock) if fd >= 0 else \
                    {"status": "failed", "reason": "no descriptor"}
            finally:
                if fd >= 0:
                    os.close(fd)
            try:
                sock.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:                         # the agent has gone
                return


def _serve(req: dict[str, object], fd: int, sock: socket.socket) -> dict[str, object]:
    cpu_s, memory = int(str(req["cpu_s"])), int(str(req["memory"]))
    pid = os.fork()
    if pid == 0:                                    # the worker
        code = _EXIT_ERROR
        try:
            sock.close()            # it reads a tenant's file: no line to the agent
            code = _work(req, fd, cpu_s, memory)
        finally:
            os._exit(code)
    pidfd = os.pidfd_open(pid)
    try:
        try:
            sock.sendall(json.dumps({"worker": pid}).encode() + b"\n")
        except OSError:                             # the agent has gone: the reply fails too
            pass
        ready, _, _ = select.select([pidfd], [], [], cpu_s * _WALL_FACTOR + _WALL_EXTRA_S)
        if not ready:                               # blocked (not using CPU): wall time
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _pid, status, usage = os.wait4(pid, 0)
    out: dict[str, object] = {"cpu_s": usage.ru_utime + usage.ru_stime,
                              "max_rss": usage.ru_maxrss * 1024}
    if not ready:
        out.update(status="rejected", reason="wall_time")
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        out.update(status="rejected", reason="cpu_time" if sig in (signal.SIGXCPU,
                   signal.SIGKILL) else "crashed")
    else:
        code = os.WEXITSTATUS(status)
        out.update({_EXIT_BUILT: {"status": "built"},
                    _EXIT_MEMORY: {"status": "rejected", "reason": "memory"},
                    _EXIT_REFUSED: {"status": "failed", "reason": "not a usable ELF file"},
                    _EXIT_MISMATCH: {"status": "failed", "reason": "build-id changed"},
                    }.get(code, {"status": "failed", "reason": f"exit {code}"}))
    return out


def _work(req: dict[str, object], fd: int, cpu_s: int, memory: int) -> int:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))     # SIGXCPU would dump core
    limit = address_space_bytes() + memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        table = table_from_fd(fd, name=str(req["name"]), use_mmap=True)
        build_id = str(req.get("build_id", ""))
        if build_id and table.build_id != build_id:
            return _EXIT_MISMATCH
        drop_page_cache(write_atomic(Path(str(req["out"])), str(req["file"]),
                                     table.to_bytes(str(req["key"]))))
    except (CfiBomb, MemoryError):
        return _EXIT_MEMORY
    except (Refused, OSError):
        return _EXIT_REFUSED
    return _EXIT_BUILT
