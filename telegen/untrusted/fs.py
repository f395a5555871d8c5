"""Opening files that a profiled process controls.

``/proc/PID/root/some/path`` is not safe to open as root: an absolute
symlink in the target's filesystem resolves against the *agent's* root (the
host), and a relative one can climb out with ``..``. So a path inside a
target is opened with ``openat2(2)`` relative to the target's root directory
with ``RESOLVE_IN_ROOT`` (``/`` and ``..`` stop at that root) and, unless the
caller allows them, ``RESOLVE_NO_SYMLINKS``; magic links (``/proc/*/fd/*``)
are never followed. Files in directories other users can write on the host
(``/tmp``) are opened the same way with root ``/``.

Python's ``os`` has no ``openat2``: it is called through ctypes. On kernels
without it (before 5.6, ``ENOSYS``) the fallback walks the path one component
at a time with ``openat(O_NOFOLLOW)``, refusing every symlink and ``..``:
stricter than openat2 (no symlink is ever followed), never looser.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat

from telegen.untrusted.limits import read_fd
from telegen.untrusted.refusals import Refused

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(platform.machine())


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_have_openat2: bool | None = None if _SYS_OPENAT2 else False


def open_in_root(root: str | int, path: str, *, symlinks: bool = False,
                 directory: bool = False, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor for ``path`` resolved inside ``root`` (a directory path or
    descriptor) as if ``root`` were ``/``. Refused (:class:`Refused`) when a
    component is a symlink (``symlink``; allowed with ``symlinks=True``, then
    confined to ``root``), or the result is not a regular file (``not_regular``;
    a directory with ``directory=True``). Opened ``O_NOFOLLOW | O_NONBLOCK |
    O_CLOEXEC`` so a FIFO never blocks. Missing files raise ``OSError``."""
    rel = path.lstrip("/") or "."
    # No O_NOFOLLOW here: RESOLVE_NO_SYMLINKS already refuses a trailing symlink
    # (ELOOP), where O_NOFOLLOW | O_DIRECTORY would say ENOTDIR; the fallback
    # walk adds O_NOFOLLOW itself.
    oflags = flags | os.O_NONBLOCK | os.O_CLOEXEC
    if directory:
        oflags |= os.O_DIRECTORY
    root_fd = root if isinstance(root, int) else os.open(
        root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2(root_fd, rel, oflags, mode, symlinks)
    finally:
        if not isinstance(root, int):
            os.close(root_fd)
    try:
        st = os.fstat(fd)
        want = stat.S_ISDIR if directory else stat.S_ISREG
        if not want(st.st_mode):
            raise Refused("not_regular", f"{path}: mode {stat.filemode(st.st_mode)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str, *, follow: bool = False) -> int:
    """A descriptor of the regular file at ``path``, a host path whose
    directories are trusted (the config's, the agent's own): its last
    component is not followed unless ``follow`` (a symlink there fails with
    ``ELOOP``), it is opened ``O_NONBLOCK`` (a FIFO never blocks), and anything
    but a regular file is refused (``not_regular``)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Refused("not_regular", f"{path}: mode {stat.filemode(mode)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str, limit: int, *, follow: bool = False) -> bytes:
    """The content of :func:`open_regular`'s file, at most ``limit`` bytes."""
    fd = open_regular(path, follow=follow)
    try:
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def read_in_root(root: str | int, path: str, limit: int, *, symlinks: bool = False,
                 owner: int | None = None) -> bytes:
    """The content of a regular file inside ``root``, at most ``limit`` bytes;
    with ``owner``, refused (``wrong_owner``) unless that uid owns it."""
    fd = open_in_root(root, path, symlinks=symlinks)
    try:
        if owner is not None and os.fstat(fd).st_uid != owner:
            raise Refused("wrong_owner", f"{path}: uid {os.fstat(fd).st_uid} != {owner}")
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def _openat2(root_fd: int, rel: str, oflags: int, mode: int, symlinks: bool) -> int:
    global _have_openat2
    resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | (0 if symlinks else RESOLVE_NO_SYMLINKS)
    if _have_openat2 is not False:
        how = _OpenHow(oflags, mode if oflags & os.O_CREAT else 0, resolve)
        fd = _libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(rel), ctypes.byref(how),
                           ctypes.sizeof(how))
        if fd >= 0:
            _have_openat2 = True
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.ELOOP:
            raise Refused("symlink", f"{rel}: a symlink on the way")
        if err == errno.EXDEV:
            raise Refused("escape", f"{rel}: leaves its root")
        if err not in (errno.ENOSYS, errno.EPERM) or _have_openat2:
            raise OSError(err, os.strerror(err), rel)
        _have_openat2 = False  # no openat2 here (ENOSYS, or a seccomp filter's EPERM)
    return _walk(root_fd, rel, oflags, mode)


def _walk(root_fd: int, rel: str, oflags: int, mode: int) -> int:
    """The fallback: one ``openat(O_NOFOLLOW)`` per component, no symlink and
    no ``..`` ever followed."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Refused("escape", f"{rel}: '..' is refused without openat2")
    dir_fd = os.dup(root_fd)
    try:
        for name in parts[:-1]:
            try:
                nxt = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=dir_fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(dir_fd, name):
                    raise Refused("symlink", f"{rel}: {name} is a symlink") from None
                raise
            os.close(dir_fd)
            dir_fd = nxt
        last = parts[-1] if parts else "."
        try:
            return os.open(last, oflags | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(dir_fd, last):
                raise Refused("symlink", f"{rel}: {last} is a symlink") from None
            raise
    finally:
        os.close(dir_fd)


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
