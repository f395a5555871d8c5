"""Files other users drop into a directory (pprof files, ``.jfr`` recordings):
found, read and deleted without following anything they could have planted.

The configured pattern is trusted; what it matches is not. So:

* the pattern's literal leading directory and every directory below it are
  opened with no symlink followed (:func:`~telegen.untrusted.open_in_root`
  from ``/``): a directory swapped for a symlink is refused, never entered;
* directories are listed through their descriptors (``os.scandir(fd)``), at
  most ``max_depth`` levels below the literal part and ``max_entries`` names
  per pass;
* only regular files are returned; a symlink, FIFO, socket or device that
  matches is reported to ``refused`` (and never opened);
* a file is read by re-resolving its path without symlinks, opened
  ``O_NOFOLLOW | O_NONBLOCK``, checked ``S_ISREG`` and read with a size cap;
* deletion unlinks the name through its directory's descriptor, and only
  while the name still names the file that was read.

Matching follows :mod:`glob`: ``*``, ``?``, ``[...]`` within one name, ``**``
as a whole component for zero or more directories, names starting with
``.`` only matched by a pattern starting with ``.``.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from telegen.untrusted import Refused, open_in_root, read_fd

MAX_DEPTH = 16
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Found:
    path: str
    size: int
    mtime_ns: int
    dev: int
    ino: int

    @property
    def signature(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


Report = Callable[[str, Refused], None]


def open_dir(root: str | int, path: str) -> int:
    """:func:`open_in_root` for a directory, with a final symlink refused as
    ``symlink`` too (``O_DIRECTORY | O_NOFOLLOW`` reports it as ENOTDIR)."""
    try:
        return open_in_root(root, path, directory=True)
    except NotADirectoryError:
        parent, name = os.path.split("/" + path.strip("/"))
        try:
            pfd = open_in_root(root, parent, directory=True)
        except OSError:
            raise Refused("not_directory", path) from None
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except OSError:
            raise Refused("not_directory", path) from None
        finally:
            os.close(pfd)
        if stat.S_ISLNK(st.st_mode):
            raise Refused("symlink", f"{path}: a symlink") from None
        raise Refused("not_directory", f"{path}: {stat.filemode(st.st_mode)}") from None


def find(pattern: str, refused: Report, *, max_depth: int = MAX_DEPTH,
         max_entries: int = MAX_ENTRIES) -> list[Found]:
    """Regular files matching ``pattern`` (``~`` expanded, made absolute),
    sorted by path. A missing literal directory matches nothing."""
    path = os.path.abspath(os.path.expanduser(pattern))
    parts = [p for p in path.split("/") if p]
    split = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts) - 1)
    base = "/" + "/".join(parts[:split])
    try:
        base_fd = open_dir("/", base)
    except Refused as exc:
        refused(base, exc)
        return []
    except OSError:
        return []
    walk = _Walk(refused, max_depth, max_entries)
    try:
        found = {f.path: f for f in walk.match(base_fd, base.rstrip("/"), parts[split:], 0)}
    finally:
        os.close(base_fd)
    return [found[p] for p in sorted(found)]


class _Walk:
    def __init__(self, refused: Report, max_depth: int, max_entries: int) -> None:
        self._refused = refused
        self._max_depth = max_depth
        self._left = max_entries
        self._over = False

    def _names(self, dir_fd: int, prefix: str) -> list[tuple[str, os.stat_result]]:
        out = []
        with os.scandir(dir_fd) as it:
            for entry in it:
                if self._left <= 0:
                    if not self._over:
                        self._over = True
                        self._refused(prefix, Refused("too_many_entries",
                                                      f"{prefix}: listing stopped"))
                    break
                self._left -= 1
                try:
                    out.append((entry.name, entry.stat(follow_symlinks=False)))
                except OSError:
                    continue
        return out

    def match(self, dir_fd: int, prefix: str, parts: list[str], depth: int) -> Iterator[Found]:
        if not parts:
            return
        head, rest = parts[0], parts[1:]
        if head == "**":
            yield from self.match(dir_fd, prefix, rest, depth)          # zero directories
            for name, st in self._names(dir_fd, prefix):
                if stat.S_ISDIR(st.st_mode) and not name.startswith("."):
                    yield from self._descend(dir_fd, prefix, name, parts, depth)
            return
        for name, st in self._names(dir_fd, prefix):
            if not _matches(name, head):
                continue
            path = f"{prefix}/{name}"
            if rest:
                if stat.S_ISDIR(st.st_mode):
                    yield from self._descend(dir_fd, prefix, name, rest, depth)
                elif stat.S_ISLNK(st.st_mode):
                    self._refused(path, Refused("symlink", f"{path}: not followed"))
            elif stat.S_ISREG(st.st_mode):
                yield Found(path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
            elif not stat.S_ISDIR(st.st_mode):
                self._refused(path, Refused(
                    "symlink" if stat.S_ISLNK(st.st_mode) else "not_regular",
                    f"{path}: {stat.filemode(st.st_mode)}"))

    def _descend(self, dir_fd: int, prefix: str, name: str, parts: list[str],
                 depth: int) -> Iterator[Found]:
        path = f"{prefix}/{name}"
        if depth >= self._max_depth:
            self._refused(path, Refused("too_deep", f"{path}: deeper than {self._max_depth}"))
            return
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=dir_fd)
        except OSError:
            return          # gone, swapped for a symlink (ELOOP/ENOTDIR), or unreadable
        try:
            yield from self.match(sub, path, parts, depth + 1)
        finally:
            os.close(sub)


def _matches(name: str, pattern: str) -> bool:
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def read(path: str, limit: int) -> bytes:
    """The content of the regular file at ``path`` (no symlink followed on
    the way), at most ``limit`` bytes; :class:`Refused` otherwise."""
    fd = open_in_root("/", path)
    try:
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def open_file(path: str) -> int:
    """A descriptor of the regular file at ``path`` (no symlink followed)."""
    return open_in_root("/", path)


def unlink(path: str, expect: Found | None = None) -> bool:
    """Remove ``path`` through its directory's descriptor (no symlink
    followed on the way); with ``expect``, only while the name still names
    that file. True when removed."""
    parent, name = os.path.split(path)
    dir_fd = open_dir("/", parent or "/")
    try:
        if expect is not None:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if (st.st_dev, st.st_ino) != (expect.dev, expect.ino):
                return False
        os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(dir_fd)
