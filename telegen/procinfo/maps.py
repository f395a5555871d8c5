"""A process's mappings (``/proc/PID/maps``) and the files behind them,
opened by descriptor."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from telegen.procinfo.elfheaders import read_build_id_fd
from telegen.procinfo.procfs import (
    DELETED,
    PROC,
    Pid,
    alive,
    fd_path,
    process_file,
    process_root,
    read_file,
)
from telegen.untrusted import Refusals, Refused, open_in_root, open_regular


@dataclass(frozen=True, slots=True)
class MapEntry:
    start: int
    end: int
    perms: str          # e.g. "r-xp"
    offset: int         # file offset of ``start``
    dev: str
    inode: int
    path: str           # "" for anonymous memory; "[vdso]", "[stack]", ...

    @property
    def executable(self) -> bool:
        return "x" in self.perms

    @property
    def is_file(self) -> bool:
        return self.inode != 0 and self.path.startswith("/")

    @property
    def deleted(self) -> bool:
        return self.path.endswith(DELETED)


def parse_maps(text: str) -> list[MapEntry]:
    """Entries in address order; malformed lines are skipped."""
    out: list[MapEntry] = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, _, hi = parts[0].partition("-")
            entry = MapEntry(int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16),
                             parts[3], int(parts[4]), parts[5].strip() if len(parts) > 5 else "")
        except ValueError:
            continue
        out.append(entry)
    return out


def read_maps(pid: Pid, proc: str = PROC) -> list[MapEntry] | None:
    """The mappings of ``pid`` (or the agent's own, :data:`SELF`) in address
    order; None when it is gone."""
    text = read_file(pid, "maps", proc)
    return parse_maps(text) if text is not None else None


def executable_files(pid: int, proc: str = PROC) -> list[str]:
    """The files ``pid`` maps executable (paths inside its root, `` (deleted)``
    removed), each once, in address order. Raises ``OSError`` when the
    process is gone."""
    entries = read_maps(pid, proc)
    if entries is None:
        raise ProcessLookupError(pid)
    paths: list[str] = []
    for e in entries:
        if e.executable and e.path.startswith("/"):
            path = e.path.removesuffix(DELETED)
            if path not in paths:
                paths.append(path)
    return paths


class MappedFile:
    """A regular file a process maps, open by descriptor (the only way the
    agent reads a profiled process's files: paths under ``/proc/PID/root``
    are never opened as paths, their symlinks would resolve on the host).

    ``path`` is where the process sees the file (inside ``root``); ``root`` is
    the process's root directory as the agent reaches it (``/proc/PID/root``),
    or "" for a host file. Close it, or use it as a context manager."""

    __slots__ = ("fd", "path", "root", "stat")

    def __init__(self, fd: int, path: str, root: str) -> None:
        self.fd = fd
        self.path = path
        self.root = root
        self.stat = os.fstat(fd)

    @property
    def identity(self) -> tuple[int, int, int, int, int]:
        """(device, inode, size, mtime, ctime): equal identities are the same
        content (ctime cannot be set back by the file's owner)."""
        st = self.stat
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @property
    def proc_path(self) -> str:
        """A path naming this descriptor (for tools that want a path)."""
        return fd_path(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def open_host_file(path: str) -> int:
    """A descriptor of a host file the agent trusts (its own binaries, the
    host's debug directories, a path from the config): symlinks followed, but
    opened ``O_NONBLOCK`` and refused unless regular, so a FIFO or a device
    never blocks or is read."""
    return open_regular(path, follow=True)


def open_mapped(pid: int, file: str, start: int, *, proc: str = PROC,
                refusals: Refusals | None = None, host_fallback: bool = False,
                build_id: str = "") -> MappedFile | None:
    """The file ``pid`` maps at ``start``, open: inside the process's root
    (its mount namespace: containers) with ``openat2(RESOLVE_IN_ROOT |
    RESOLVE_NO_SYMLINKS)``, else through ``/proc/PID/map_files`` — the
    mapping itself, which still reaches a file deleted since (an upgraded
    binary), one that never had a path (a memfd), or one whose path now goes
    through a symlink (refused and counted). Only regular files. With
    ``pid == 0``, ``file`` is a host path. None when nothing opens.

    ``host_fallback``: when the process is gone (its root and mappings with
    it), the same path on the host — opened without following symlinks, and
    only if it carries ``build_id`` (when one is given): the process may have
    lived in another mount namespace, where that path was another file."""
    if not file or file.startswith("["):
        return None
    file = file.removesuffix(DELETED)
    if not pid:
        try:
            return MappedFile(open_host_file(file), file, "")
        except (OSError, Refused):
            return None
    root = process_root(pid, proc)
    fd = open_noted(root, file, source="mapped_file", refusals=refusals)
    if fd is not None:
        return MappedFile(fd, file, root)
    fd = open_map_files(process_file(pid, "map_files", proc), start, refusals)
    if fd is not None:
        return MappedFile(fd, file, root)
    if host_fallback and not alive(pid, proc):
        return _host_copy(file, build_id)
    return None


def open_noted(root: str, path: str, *, source: str, refusals: Refusals | None,
               symlinks: bool = False) -> int | None:
    """``path`` opened inside ``root`` (:func:`telegen.untrusted.open_in_root`),
    or a host file when ``root`` is ""; None when it does not open, a refusal
    noted under ``source``."""
    try:
        if root:
            return open_in_root(root, path, symlinks=symlinks)
        return open_host_file(path)
    except Refused as exc:
        if refusals is not None:
            refusals.note_exc(source, exc)
    except OSError:
        pass
    return None


def _host_copy(file: str, build_id: str) -> MappedFile | None:
    try:
        fd = open_in_root("/", file)
    except (OSError, Refused):
        return None
    if build_id and read_build_id_fd(fd) != build_id:
        os.close(fd)
        return None
    return MappedFile(fd, file, "")


def open_map_files(directory: str, start: int, refusals: Refusals | None) -> int | None:
    """The mapping at ``start`` opened through its ``map_files`` entry: an
    ``O_PATH`` descriptor of the mapped inode first (no open side effect),
    reopened for reading only when it is a regular file."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(f"{start:x}-")]
    except OSError:
        return None
    if not names:
        return None
    try:
        path_fd = os.open(f"{directory}/{names[0]}", os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        mode = os.fstat(path_fd).st_mode
        if not stat.S_ISREG(mode):
            if refusals is not None:
                refusals.note("mapped_file", "not_regular", stat.filemode(mode))
            return None
        return os.open(fd_path(path_fd), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(path_fd)
