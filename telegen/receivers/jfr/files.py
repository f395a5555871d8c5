"""``.jfr`` files dropped into a directory: each read once per (size, mtime),
after its size and mtime held still for one poll (files already there at
start are read at once)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable

from telegen.formats.jfr import Chunk, JfrError, read_chunks

log = logging.getLogger(__name__)
Signature = tuple[int, int]


class DroppedFiles:
    def __init__(self, directory: str) -> None:
        self.directory = os.path.expanduser(directory)
        self._read: dict[str, Signature] = {}
        self._pending: dict[str, Signature] = {}
        self._first = True

    def ready(self) -> list[str]:
        """Files to read now."""
        present = sorted(p for p in glob.glob(os.path.join(self.directory, "*.jfr"))
                         if os.path.isfile(p))
        out = []
        for path in present:
            try:
                st = os.stat(path)
            except OSError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if self._read.get(path) == sig:
                continue
            if not self._first and self._pending.get(path) != sig:
                self._pending[path] = sig
                continue
            self._pending.pop(path, None)
            self._read[path] = sig
            out.append(path)
        keep = set(present)
        self._read = {p: s for p, s in self._read.items() if p in keep}
        self._pending = {p: s for p, s in self._pending.items() if p in keep}
        self._first = False
        return out

    def read(self, path: str, consume: Callable[[Chunk], None],
             on_error: Callable[[JfrError], None]) -> int:
        """Hand every good chunk of ``path`` to ``consume``; returns how many."""
        count = 0
        try:
            with open(path, "rb") as f:
                for chunk in read_chunks(f, on_error=on_error):
                    consume(chunk)
                    count += 1
        except OSError as exc:
            on_error(JfrError(f"{path}: {exc}"))
        return count

    def delete(self, path: str) -> None:
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("could not delete %s after reading: %s", path, exc)
        self._read.pop(path, None)
