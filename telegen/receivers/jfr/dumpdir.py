"""One recording's dump directory, made inside the JVM's own filesystem
without trusting anything the JVM's user controls.

The JVM writes its dumps as its own user, so the directory must belong to
that user; everything the agent (root) does there goes through descriptors:

* the parent (``dump_directory``, ``/tmp`` by default) is opened inside the
  JVM's root with :func:`~telegen.untrusted.open_in_root` (no symlink
  followed, ``/`` and ``..`` stop at the JVM's root, so nothing on the host is
  reached from a container);
* a fresh directory with a random name is made there with ``mkdirat`` (which
  fails on any existing name: ``O_EXCL`` semantics), opened ``O_NOFOLLOW``,
  filled (the ``.jfc`` settings, created ``O_EXCL``), then ``fchown``-ed to the
  JVM's user — never ``chown`` by path;
* dumps are opened ``O_NOFOLLOW | O_NONBLOCK`` relative to that descriptor,
  must be regular files owned by the JVM's user with one link, and are read
  with a size cap;
* removal unlinks the entries through the descriptor and ``rmdir``-s the
  directory through the parent's descriptor only if the name still names the
  same directory: never ``rmtree`` by path.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import BinaryIO

from telegen.helpers.dropdir import open_dir
from telegen.untrusted import Refused, open_in_root
from telegen.untrusted.limits import capped_reader

PREFIX = "telegen-jfr-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DumpDirectory:
    def __init__(self, parent_fd: int, fd: int, name: str, target_path: str,
                 uid: int, gid: int) -> None:
        self._parent_fd = parent_fd
        self._fd = fd
        self.name = name
        self.target_path = target_path     # as the JVM sees it (for jcmd)
        self.uid = uid
        self.gid = gid

    @classmethod
    def create(cls, root: str, parent: str, uid: int, gid: int, files: dict[str, bytes]
               ) -> DumpDirectory:
        """Make ``<parent>/telegen-jfr-<random>`` inside ``root`` holding
        ``files``, all owned by ``uid:gid``. Raises :class:`Refused` (a symlink
        or non-directory on the way) or ``OSError``."""
        parent_fd = open_dir(root, parent)
        try:
            name = _mkdir_fresh(parent_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except BaseException:
            os.close(parent_fd)
            raise
        self = cls(parent_fd, fd, name, f"{parent.rstrip('/')}/{name}", uid, gid)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
                raise Refused("not_ours", f"{self.target_path}: replaced after mkdir")
            for file_name, data in files.items():
                self._write(file_name, data)
            os.fchown(fd, uid, gid)        # handed over last: until now only we could write
        except BaseException:
            self.remove()
            raise
        return self

    def path(self, name: str) -> str:
        """``name`` in this directory as the JVM sees it."""
        return f"{self.target_path}/{name}"

    def _write(self, name: str, data: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=self._fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, self.uid, self.gid)
        finally:
            os.close(fd)

    def open_dump(self, name: str, limit: int) -> BinaryIO:
        """A dump the JVM wrote, as a reader refusing more than ``limit``
        bytes. Refused unless a regular file with one link owned by the JVM's
        user; ``FileNotFoundError`` when absent."""
        fd = open_in_root(self._fd, name)
        try:
            st = os.fstat(fd)
            if st.st_uid != self.uid:
                raise Refused("wrong_owner", f"{self.path(name)}: uid {st.st_uid} != {self.uid}")
            if st.st_nlink != 1:
                raise Refused("hard_link", f"{self.path(name)}: {st.st_nlink} links")
            return capped_reader(fd, limit, self.path(name))
        except BaseException:
            os.close(fd)
            raise

    def unlink(self, name: str) -> None:
        """Remove ``name`` (whatever it is, a symlink itself, never its target)."""
        try:
            os.unlink(name, dir_fd=self._fd)
        except OSError:
            pass

    def remove(self) -> None:
        """Empty the directory through its descriptor and remove it through
        the parent's, if its name still names it. Subdirectories someone made
        in it are left (and so is the directory then)."""
        if self._fd < 0:
            return
        try:
            with os.scandir(self._fd) as it:
                names = [e.name for e in it if not e.is_dir(follow_symlinks=False)]
            for name in names:
                self.unlink(name)
            mine = os.fstat(self._fd)
            now = os.stat(self.name, dir_fd=self._parent_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                os.rmdir(self.name, dir_fd=self._parent_fd)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            os.close(self._parent_fd)
            self._fd = self._parent_fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0


def _mkdir_fresh(parent_fd: int) -> str:
    for _ in range(16):
        name = PREFIX + secrets.token_hex(8)
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            return name
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no fresh dump directory name after 16 tries")
