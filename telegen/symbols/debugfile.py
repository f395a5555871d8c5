"""Find the separate debug file of a binary on local disk, the way gdb does:

1. by build-id: ``<debug_dir>/.build-id/xx/yyyy.debug``;
2. by ``.gnu_debuglink``: next to the binary, in its ``.debug/`` subdirectory,
   and ``<debug_dir>/<binary's dir>/``; a candidate must match the link's CRC32
   (or, cheaper and equally strict, the binary's build-id).

Inside a profiled process's root (``root``, e.g. ``/proc/PID/root``) every
candidate is opened with ``openat2(RESOLVE_IN_ROOT)``: build-id links (often
symlinks) may be followed but stay in that root, debug-link candidates may not
contain symlinks at all; the same holds for the binary's own directory on the
host (its owner may be any user). The agent's own debug directories on the
host (root-owned, trusted) are opened as they are. Only regular files; a
debug-link name is a file name (no ``/``, never ``.``/``..``); a build-id is
hex before it becomes a path; a CRC is computed only over a file whose size
is under the cap. Found files are returned open, never as paths.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

from telegen.procinfo.elfheaders import read_build_id_fd, valid_build_id
from telegen.procinfo.maps import open_noted
from telegen.symbols.elf import ElfFile
from telegen.untrusted import Refusals, Refused

MAX_CRC_BYTES = 2 << 30


class DebugFile:
    """An open candidate: ``fd`` (the caller closes it) and where it was found."""

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path


def build_id_path(debug_dir: str, build_id: str) -> str:
    if not valid_build_id(build_id):
        raise Refused("bad_build_id", repr(build_id[:80]))
    return os.path.join(debug_dir, ".build-id", build_id[:2], build_id[2:] + ".debug")


def find_debug_file(binary: ElfFile, debug_dirs: Sequence[str], *, root: str = "",
                    refusals: Refusals | None = None,
                    max_crc_bytes: int = MAX_CRC_BYTES) -> DebugFile | None:
    """The local debug file of ``binary`` (open), or None.

    ``root`` is the binary's process's root directory (``/proc/PID/root``) or
    "" for a host binary; ``binary.path`` is the binary's path inside it.
    Build-id candidates are looked for inside ``root`` first, then on the host.
    """
    build_id = binary.build_id
    if build_id:
        found = find_by_build_id(build_id, debug_dirs, root=root, refusals=refusals)
        if found is not None:
            return found
    link = binary.debuglink()
    if link is None:
        return None
    name, crc = link
    try:
        candidates = _link_candidates(binary.path, name, debug_dirs, root)
    except Refused as exc:
        if refusals is not None:
            refusals.note_exc("debuglink", exc)
        return None
    for where, path in candidates:
        fd = _open(where, path, symlinks=False, refusals=refusals)
        if fd is None:
            continue
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == binary.identity[:2]:
            os.close(fd)
            continue
        if (build_id and read_build_id_fd(fd) == build_id) or \
                (not build_id and _crc32(fd, max_crc_bytes, refusals) == crc):
            return DebugFile(fd, path)
        os.close(fd)
    return None


def find_by_build_id(build_id: str, debug_dirs: Sequence[str], *, root: str = "",
                     refusals: Refusals | None = None) -> DebugFile | None:
    """``<debug_dir>/.build-id/xx/yyyy.debug`` inside ``root`` (symlinks followed
    but confined to it), then on the host; it must carry that build-id."""
    try:
        rel = [build_id_path(d, build_id) for d in debug_dirs]
    except Refused as exc:
        if refusals is not None:
            refusals.note_exc("build_id", exc)
        return None
    for where in ((root, "") if root else ("",)):
        for path in rel:
            fd = _open(where, path, symlinks=True, refusals=refusals)
            if fd is None:
                continue
            if read_build_id_fd(fd) == build_id:
                return DebugFile(fd, path)
            os.close(fd)
    return None


def _link_candidates(bin_path: str, name: str, debug_dirs: Sequence[str],
                     root: str) -> list[tuple[str, str]]:
    """(root or "" for the host, path) pairs to try for debug-link ``name``."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise Refused("debuglink_path", repr(name[:80]))
    bin_dir = os.path.dirname(bin_path)
    if ".." in bin_dir.split("/"):
        raise Refused("debuglink_path", f"binary directory {bin_dir[:80]!r}")
    # the binary's own directory is the tenant's even on the host: never through a symlink
    beside_root = root or "/"
    out = [(beside_root, os.path.join(bin_dir, name)),
           (beside_root, os.path.join(bin_dir, ".debug", name))]
    for d in debug_dirs:
        beside = os.path.join(d, bin_dir.lstrip("/"), name)
        out.append(("", beside))
        if root:
            out.append((root, beside))
    return out


def _open(root: str, path: str, *, symlinks: bool, refusals: Refusals | None) -> int | None:
    return open_noted(root, path, source="debug_file", refusals=refusals, symlinks=symlinks)


def _crc32(fd: int, limit: int, refusals: Refusals | None) -> int | None:
    size = os.fstat(fd).st_size
    if size > limit:
        if refusals is not None:
            refusals.note("debug_file", "too_large", f"{size} bytes > {limit} for a CRC")
        return None
    crc, pos = 0, 0
    while pos < size:
        chunk = os.pread(fd, min(1 << 20, size - pos), pos)
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        pos += len(chunk)
    return crc & 0xFFFFFFFF
