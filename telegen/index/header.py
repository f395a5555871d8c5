"""The file format shared by the per-binary indexes (docs/loader-and-index.md):
one file per binary, a fixed header, a directory of sections, then
fixed-width arrays used in place through ``mmap`` (no Python object per row).

Layout (little-endian, every section 8-byte aligned)::

    0   magic       8s   b"TGINDEX1"
    8   kind        8s   what the file indexes (b"cfi", b"symbols"…), NUL-padded
    16  version     I    the kind's own format version
    20  sections    I    number of directory entries
    24  total       Q    the file's size (a truncated file is refused)
    32  key         256s the cache key the file was written for, NUL-padded
                         (``<build-id>-<content digest>``: build-id *and* content)
    288 directory   sections × (tag 4s, item size I, offset Q, count Q)

Files are written once (temporary file + ``rename`` in the cache directory)
and never modified, so a reader maps a complete file or none. Reading
checks the magic, kind, version, key, size and that every section lies
inside the file; anything else is ``ValueError``.

The directory holding them is capped in bytes (:func:`enforce_cap`): the
least recently used files (mtime, which readers refresh) go first.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path

MAGIC = b"TGINDEX1"
_HEAD = struct.Struct("<8s8sIIQ256s")
_ENTRY = struct.Struct("<4sIQQ")
MAX_SECTIONS = 64
Buffer = bytes | bytearray | mmap.mmap


class Section:
    """One array of an index: ``count`` items of ``item_size`` bytes."""

    __slots__ = ("item_size", "data")

    def __init__(self, item_size: int, data: bytes) -> None:
        if item_size <= 0 or len(data) % item_size:
            raise ValueError("section size is not a multiple of its item size")
        self.item_size = item_size
        self.data = data


def pack(kind: bytes, version: int, key: str, sections: Mapping[bytes, Section]) -> bytes:
    """The bytes of one index file."""
    if len(sections) > MAX_SECTIONS:
        raise ValueError("too many sections")
    offset = _HEAD.size + _ENTRY.size * len(sections)
    entries, bodies = [], []
    for tag, sec in sections.items():
        pad = -offset % 8
        bodies.append(b"\0" * pad + sec.data)
        offset += pad
        entries.append(_ENTRY.pack(tag, sec.item_size, offset, len(sec.data) // sec.item_size))
        offset += len(sec.data)
    head = _HEAD.pack(MAGIC, kind, version, len(sections), offset, key.encode())
    return b"".join([head, *entries, *bodies])


def unpack(data: Buffer, kind: bytes, version: int,
           key: str | None = None) -> dict[bytes, memoryview]:
    """tag → a read-only view of the section's bytes, over ``data`` itself
    (cast it: ``view.cast("Q")``). ``ValueError`` for anything malformed."""
    if len(data) < _HEAD.size:
        raise ValueError("truncated index (header)")
    magic, got_kind, got_version, count, total, got_key = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError("not an index file (bad magic)")
    if got_kind.rstrip(b"\0") != kind or got_version != version:
        raise ValueError(f"index of another kind or version: {got_kind!r} {got_version}")
    if key is not None and got_key.rstrip(b"\0") != key.encode():
        raise ValueError("index written for another key")
    if total != len(data):
        raise ValueError("truncated index")
    if count > MAX_SECTIONS or _HEAD.size + _ENTRY.size * count > total:
        raise ValueError("corrupt index directory")
    view = memoryview(data).toreadonly()
    out: dict[bytes, memoryview] = {}
    for i in range(count):
        tag, item_size, offset, items = _ENTRY.unpack_from(data, _HEAD.size + _ENTRY.size * i)
        end = offset + item_size * items
        if item_size == 0 or offset % 8 or end > total or offset < _HEAD.size:
            raise ValueError("section outside the index")
        out[tag] = view[offset:end]
    return out


def write_atomic(directory: Path, name: str, data: bytes) -> Path:
    """``directory/name`` holding ``data``, replaced in one ``rename``."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / name


def map_file(path: Path, *, touch: bool = True) -> mmap.mmap:
    """A read-only mapping of a whole index file; its mtime is refreshed
    (``touch``) so the size cap evicts the least recently *used* files."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise ValueError("empty index file")
        mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        if touch:
            try:
                os.utime(fd)
            except OSError:
                pass
        return mapped
    finally:
        os.close(fd)


def enforce_cap(directory: Path, max_bytes: int, suffix: str) -> tuple[int, int]:
    """Delete the least recently used ``*suffix`` files of ``directory`` until
    they take at most ``max_bytes`` (90% of it, so that not every store
    evicts). Returns (bytes kept, files deleted). Mapped files stay valid for
    their readers (the inode lives until unmapped)."""
    files = []
    total = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.name.endswith(suffix) or not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                files.append((max(st.st_mtime_ns, st.st_atime_ns), st.st_size, entry.path))
                total += st.st_size
    except OSError:
        return 0, 0
    if total <= max_bytes:
        return total, 0
    files.sort()
    target = max_bytes * 9 // 10
    deleted = 0
    for _used, size, path in files:
        if total <= target:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
        deleted += 1
    return total, deleted
