"""``.jfr`` files dropped into a directory: each read once per (size, mtime),
after its size and mtime held still for one poll (files already there at
start are read at once).

The directory's content is not trusted (:mod:`telegen.helpers.dropdir`):
no symlink is followed, only regular files are read, at most
``max_file_bytes`` each, and deletion goes through the directory's
descriptor. What is refused is noted as ``refused_inputs{source="jfr_file"}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from telegen.formats.jfr import Chunk, JfrError, read_chunks
from telegen.formats.jfr.stream import DEFAULT_MAX_CHUNK_BYTES
from telegen.helpers import dropdir
from telegen.untrusted import Refusals, Refused
from telegen.untrusted.limits import capped_reader

log = logging.getLogger(__name__)
Signature = tuple[int, int]
SOURCE = "jfr_file"


class DroppedFiles:
    def __init__(self, directory: str, max_file_bytes: int, refusals: Refusals) -> None:
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self._limit = max_file_bytes
        self._refusals = refusals
        self._read: dict[str, Signature] = {}
        self._pending: dict[str, Signature] = {}
        self._found: dict[str, dropdir.Found] = {}
        self._noted: set[tuple[str, str]] = set()
        self._first = True

    def _refused(self, path: str, exc: Refused) -> None:
        if (path, exc.reason) not in self._noted:      # once per file, not per poll
            self._noted.add((path, exc.reason))
            self._refusals.note(SOURCE, exc.reason, exc.detail)

    def ready(self) -> list[str]:
        """Files to read now."""
        found = dropdir.find(os.path.join(self.directory, "*.jfr"), self._refused)
        self._found = {f.path: f for f in found}
        out = []
        for f in found:
            sig = f.signature
            if self._read.get(f.path) == sig:
                continue
            if not self._first and self._pending.get(f.path) != sig:
                self._pending[f.path] = sig
                continue
            self._pending.pop(f.path, None)
            self._read[f.path] = sig
            out.append(f.path)
        keep = set(self._found)
        self._read = {p: s for p, s in self._read.items() if p in keep}
        self._pending = {p: s for p, s in self._pending.items() if p in keep}
        if len(self._noted) > 4096:
            self._noted.clear()
        self._first = False
        return out

    def read(self, path: str, consume: Callable[[Chunk], None],
             on_error: Callable[[JfrError], None]) -> int:
        """Hand every good chunk of ``path`` to ``consume``; returns how many,
        or -1 when the file was refused (noted) before any chunk."""
        count = 0
        try:
            fd = dropdir.open_file(path)
            try:
                f = capped_reader(fd, self._limit, path)
            except BaseException:
                os.close(fd)
                raise
            with f:
                for chunk in read_chunks(f, on_error=on_error,
                                         max_chunk_bytes=min(self._limit,
                                                             DEFAULT_MAX_CHUNK_BYTES)):
                    consume(chunk)
                    count += 1
        except Refused as exc:
            self._refused(path, exc)
            return -1 if count == 0 else count
        except OSError as exc:
            on_error(JfrError(f"{path}: {exc}"))
        return count

    def delete(self, path: str) -> None:
        try:
            dropdir.unlink(path, self._found.get(path))
        except Refused as exc:
            self._refused(path, exc)
        except OSError as exc:
            log.warning("could not delete %s after reading: %s", path, exc)
        self._read.pop(path, None)
