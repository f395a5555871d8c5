"""Which cached object a file may reuse: build-id *and* content.

Caches of parsed objects and unwind tables used to be keyed by build-id
alone, and a build-id is just bytes in a note that any binary can copy: a
process mapping a file that carries libc's build-id had its symbols (and CFI
table, on disk across restarts) served for every real libc. Keys are now
``<build-id>:<content digest>``: a SHA-256 of the whole file, computed once
per file identity (device, inode, size, mtime, ctime — the owner of a file
can set its mtime back, not its ctime) and remembered. Identical copies (the
same libc in many containers) share one entry; a different file claiming a
known build-id gets its own, and is counted (:attr:`ContentKeys.mismatches`).
Files larger than ``max_bytes`` are not hashed: keyed by identity instead
(no sharing between copies, never a wrong share).
"""

from __future__ import annotations

import hashlib
import os
import threading

from cachetools import LRUCache

Identity = tuple[int, int, int, int, int]
MAX_HASHED_BYTES = 512 << 20


def identity_of(fd: int) -> Identity:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ContentKeys:
    """Thread-safe, bounded: identity → digest, build-id → first digest seen."""

    def __init__(self, maxsize: int = 4096, *, max_bytes: int = MAX_HASHED_BYTES) -> None:
        self._digests: LRUCache[Identity, str] = LRUCache(maxsize)
        self._claims: LRUCache[str, str] = LRUCache(maxsize)
        self._contested: LRUCache[str, bool] = LRUCache(maxsize)
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.hashed_bytes = 0
        self.mismatches = 0

    def digest(self, fd: int, identity: Identity | None = None) -> str:
        """SHA-256 of the file open on ``fd`` (hex), or "" when it is larger
        than ``max_bytes``."""
        ident = identity or identity_of(fd)
        with self._lock:
            hit = self._digests.get(ident)
        if hit is not None:
            return hit
        size = ident[2]
        if size > self.max_bytes:
            return ""
        h = hashlib.sha256()
        pos = 0
        while pos < size:
            chunk = os.pread(fd, min(1 << 20, size - pos), pos)
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
        digest = h.hexdigest()
        with self._lock:
            self._digests[ident] = digest
            self.hashed_bytes += pos
        return digest

    def key(self, build_id: str, fd: int, identity: Identity | None = None) -> tuple[str, bool]:
        """(cache key, mismatch): ``mismatch`` is True when the file's content
        differs from the first file seen with ``build_id``."""
        ident = identity or identity_of(fd)
        digest = self.digest(fd, ident)
        body = digest[:32] if digest else "id-" + "-".join(str(x) for x in ident)
        key = f"{build_id or 'nobuildid'}:{body}"
        if not build_id:
            return key, False
        with self._lock:
            first = self._claims.get(build_id)
            if first is None:
                self._claims[build_id] = body
                return key, False
        if first == body:
            return key, False
        with self._lock:
            self.mismatches += 1
            self._contested[build_id] = True
        return key, True

    def unique(self, build_id: str) -> str | None:
        """The key of the one content seen with ``build_id`` — for a file that
        can no longer be opened (its process exited) — or None when none or
        several contents claimed it."""
        with self._lock:
            body = self._claims.get(build_id)
            if body is None or build_id in self._contested:
                return None
        return f"{build_id}:{body}"
