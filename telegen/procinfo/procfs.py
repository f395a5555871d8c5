"""Where things are under ``/proc``, and the small readers of one process's
files there: the only module that spells a ``/proc`` path.

Every function takes ``proc`` (``/proc`` unless a test gives a fake tree) and
a ``pid``, or :data:`SELF` for the agent's own process. A file that cannot be
read (the process is gone, or it is a kernel thread) gives None or an empty
value, as each function says: processes come and go between two reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from telegen.untrusted import open_regular

PROC = "/proc"
SELF = "self"
KALLSYMS = f"{PROC}/kallsyms"
DELETED = " (deleted)"

Pid = int | str        # a process id, or SELF


def process_dir(pid: Pid, proc: str = PROC) -> str:
    """``/proc/PID``: the directory of ``pid``'s files."""
    return f"{proc}/{pid if pid == SELF else int(pid)}"


def process_file(pid: Pid, name: str, proc: str = PROC) -> str:
    """``/proc/PID/name``."""
    return f"{process_dir(pid, proc)}/{name}"


def process_root(pid: Pid, proc: str = PROC) -> str:
    """The root directory of process ``pid`` as the agent reaches it (its
    mount namespace: files of processes in containers are opened in there,
    with :func:`telegen.untrusted.open_in_root`)."""
    return process_file(pid, "root", proc)


def fd_path(fd: int) -> str:
    """A path naming the agent's own descriptor ``fd`` (for tools that want a
    path: BCC's uprobe attach, pyelftools); it reaches the very file open on
    ``fd``, never a path that could be swapped in between."""
    return f"{PROC}/{SELF}/fd/{int(fd)}"


def read_text(path: str) -> str | None:
    """A /proc (or any) text file, undecodable bytes replaced; None when unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def read_file(pid: Pid, name: str, proc: str = PROC) -> str | None:
    """:func:`read_text` of ``/proc/PID/name``."""
    return read_text(process_file(pid, name, proc))


def alive(pid: int, proc: str = PROC) -> bool:
    """Whether process ``pid`` exists (a zombie counts until it is reaped)."""
    return os.path.exists(process_dir(pid, proc))


def list_pids(proc: str = PROC) -> list[int]:
    """The pids of every process now, in order."""
    try:
        return sorted(int(d) for d in os.listdir(proc) if d.isdigit())
    except OSError:
        return []


def read_comm(pid: Pid, proc: str = PROC) -> str | None:
    """The process's name (``comm``, at most 15 bytes); None when it is gone."""
    comm = read_file(pid, "comm", proc)
    return comm.strip() if comm is not None else None


def read_exe(pid: Pid, proc: str = PROC) -> str:
    """The executable's path as the process sees it (inside its mount
    namespace), `` (deleted)`` removed; "" when unknown (kernel threads,
    another user's process without ptrace rights, gone)."""
    try:
        return os.readlink(process_file(pid, "exe", proc)).removesuffix(DELETED)
    except OSError:
        return ""


def read_cmdline(pid: Pid, proc: str = PROC) -> tuple[str, ...]:
    """The command line's arguments; () when unknown or empty."""
    text = read_file(pid, "cmdline", proc) or ""
    return tuple(a for a in text.split("\0") if a)


def exe_stat(pid: int, proc: str = PROC) -> os.stat_result | None:
    """``stat`` of the executable itself (through the ``exe`` magic link, so
    a file in another mount namespace, or deleted since, is reached)."""
    try:
        return os.stat(process_file(pid, "exe", proc))
    except OSError:
        return None


def open_exe(pid: int, proc: str = PROC) -> int:
    """A descriptor of the executable itself, opened through the ``exe``
    magic link (never a path the process's owner could swap for a symlink):
    ``O_NONBLOCK``, regular files only (:func:`telegen.untrusted.open_regular`).
    Raises ``OSError`` or ``Refused``."""
    return open_regular(process_file(pid, "exe", proc), follow=True)


def namespace_inode(pid: Pid, kind: str, proc: str = PROC) -> int:
    """The inode of the process's ``kind`` namespace (``net``, ``pid``,
    ``mnt``...): equal inodes are the same namespace; -1 when unknown."""
    try:
        return os.stat(process_file(pid, f"ns/{kind}", proc)).st_ino
    except OSError:
        return -1


@dataclass(frozen=True, slots=True)
class Command:
    """What a process runs: its name, executable and arguments."""

    pid: int
    comm: str
    exe: str                      # inside its mount namespace; "" when unknown
    cmdline: tuple[str, ...]


def read_command(pid: int, proc: str = PROC) -> Command | None:
    """:class:`Command` of ``pid``; None when it is gone."""
    comm = read_comm(pid, proc)
    if comm is None:
        return None
    return Command(pid, comm, read_exe(pid, proc), read_cmdline(pid, proc))
