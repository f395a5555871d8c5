"""GNU build-ids of the files processes map, read from descriptors with a
bounded note parser (:mod:`telegen.procinfo.elfheaders`), cached per file
identity."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable

from cachetools import LRUCache

from telegen.procinfo.elfheaders import read_build_id_fd, valid_build_id
from telegen.procinfo.maps import open_host_file, open_map_files
from telegen.untrusted import Refused, open_in_root

# the two shapes of path procinfo builds for a mapped file
_ROOTED = re.compile(r"(?P<proc>.*?)/(?P<pid>\d+)/root(?P<path>/.*)")  # first /PID/root
_MAP_FILES = re.compile(r"(?P<proc>.*)/(?P<pid>\d+)/map_files/(?P<start>[0-9a-f]+)-[0-9a-f]+")

__all__ = ["BuildIdCache", "open_for_build_id", "read_build_id", "valid_build_id"]


def open_for_build_id(path: str) -> int:
    """A descriptor for ``path``. ``/proc/PID/root/FILE`` is opened inside that
    root without following its symlinks, ``/proc/PID/map_files/START-END``
    through the mapping; any other path is a host file (regular files only)."""
    m = _ROOTED.fullmatch(path)
    if m is not None:
        return open_in_root(f"{m['proc']}/{m['pid']}/root", m["path"])
    m = _MAP_FILES.fullmatch(path)
    if m is not None:
        fd = open_map_files(f"{m['proc']}/{m['pid']}/map_files", int(m["start"], 16), None)
        if fd is None:
            raise FileNotFoundError(path)
        return fd
    return open_host_file(path)


def _of_path(path: str, read_fd: Callable[[int], str]) -> str:
    """``read_fd`` of the file at ``path`` (see :func:`open_for_build_id`);
    "" when it does not open."""
    try:
        fd = open_for_build_id(path)
    except (OSError, Refused):
        return ""
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def read_build_id(path: str) -> str:
    """The ``NT_GNU_BUILD_ID`` of an ELF file as hex, or ""."""
    return _of_path(path, read_build_id_fd)


class BuildIdCache:
    """Build-ids keyed by (device, inode, size, mtime, ctime) of the opened
    file: one read per distinct file."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._cache: LRUCache[tuple[int, int, int, int, int], str] = LRUCache(maxsize)
        self._lock = threading.Lock()

    def get(self, path: str) -> str:
        return _of_path(path, self.get_fd)

    def get_fd(self, fd: int) -> str:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        build_id = read_build_id_fd(fd)
        with self._lock:
            self._cache[key] = build_id
        return build_id

    def __len__(self) -> int:
        return len(self._cache)
