"""GNU build-ids read with pyelftools, cached per file identity."""

from __future__ import annotations

import os
import threading

from cachetools import LRUCache
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection
from elftools.elf.segments import NoteSegment


def read_build_id(path: str) -> str:
    """The ``.note.gnu.build-id`` (NT_GNU_BUILD_ID) of an ELF file as hex, or ""."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for section in elf.iter_sections():
                if not isinstance(section, NoteSection):
                    continue
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"])
            for segment in elf.iter_segments():   # stripped of section headers
                if not isinstance(segment, NoteSegment):
                    continue
                for note in segment.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"])
    except (OSError, ELFError, ValueError, KeyError, AssertionError):
        return ""
    return ""


class BuildIdCache:
    """Build-ids keyed by (device, inode, mtime, size): one read per distinct file."""

    def __init__(self, maxsize: int = 4096) -> None:
        self._cache: LRUCache[tuple[int, int, int, int], str] = LRUCache(maxsize)
        self._lock = threading.Lock()

    def get(self, path: str) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return ""
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        build_id = read_build_id(path)
        with self._lock:
            self._cache[key] = build_id
        return build_id

    def __len__(self) -> int:
        return len(self._cache)
