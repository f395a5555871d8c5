"""The bytes the pclntab reader uses, never mapped from the profiled file.

A file a profiled process can write (its own binary in a container layer, a
Go ``c-shared`` library; any binary once its process has exited) can be
truncated under a mapping of it, and the next access to a page past the new
end is SIGBUS: the agent would die. So the untrusted file is only ever read
with ``pread`` — :class:`FileBytes`, for finding the pclntab — and the
ranges the reader needs (the pclntab, the moduledata, the ``go:func.*`` data
holding inline trees) are copied, at their own offsets, into a sparse file
the agent owns under ``cache_dir("gopclntab")``, which is then mapped:
shared, evictable page cache, kept across restarts, keyed by build-id and
file identity (device, inode, size, mtime, ctime). The directory is capped
in bytes on disk (oldest copies removed first). When it cannot be written,
the ranges go into anonymous memory instead.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Sequence

from telegen.cachedir import cache_dir
from telegen.untrusted import Refused

CHUNK = 4 << 20                  # bytes read at a time while searching the file
MAX_CACHE_BYTES = 1 << 30        # disk used by all copies together
COPY_FORMAT = 1


class FileBytes:
    """Read-only access to an untrusted file by ``pread``: a short read (the
    file shrank) is :class:`Refused`, never a signal."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self._chunk_at, self._chunk = 0, b""     # the last chunk searched

    def read(self, at: int, n: int) -> bytes:
        data = os.pread(self.fd, n, at) if n > 0 else b""
        if len(data) != n:
            raise Refused("bad_gopclntab", f"{n} bytes at {at:#x}: the file is shorter")
        return data

    def unpack(self, fmt: struct.Struct, at: int) -> tuple[int, ...]:
        return fmt.unpack(self.read(at, fmt.size))

    def find(self, needle: bytes, start: int, end: int) -> int:
        """Offset of the first ``needle`` in ``[start, end)``, -1 if none;
        successive searches inside one chunk read it once."""
        pos = start
        while pos < end:
            base, chunk = self._chunk_at, self._chunk
            if not base <= pos < base + len(chunk) - len(needle) + 1:
                base, chunk = pos, os.pread(self.fd, min(CHUNK, self.size - pos), pos)
                self._chunk_at, self._chunk = base, chunk
                if len(chunk) < len(needle):
                    return -1
            found = chunk.find(needle, pos - base, min(end - base, len(chunk)))
            if found >= 0:
                return base + found
            # the chunk ends inside [start, end): go on from where a match could still start
            pos = base + len(chunk) - len(needle) + 1
            if base + len(chunk) >= min(end, self.size):
                return -1
        return -1


def private_copy(fd: int, size: int, ranges: Sequence[tuple[int, int]], key: str,
                 meta: dict[str, object]) -> mmap.mmap:
    """A read-only mapping of ``size`` bytes holding ``ranges`` of the file
    on ``fd`` at their own offsets (zeros elsewhere): the agent's copy
    ``key`` in the cache directory, made now or found from before (with
    ``meta`` equal to what is stored), else anonymous memory."""
    try:
        return _disk_copy(fd, size, ranges, key, meta)
    except OSError:
        buf = mmap.mmap(-1, max(size, 1))
        for start, end in ranges:
            _check(start, end, size)
            got = os.preadv(fd, [memoryview(buf)[start:end]], start)
            if got != end - start:
                buf.close()
                raise Refused("bad_gopclntab", "the file shrank while copied") from None
        return buf


def copy_key(build_id: str, fd: int) -> str:
    st = os.fstat(fd)
    identity = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    return f"{build_id or 'nobuildid'}-{hashlib.sha256(identity.encode()).hexdigest()[:24]}"


def stored_meta(key: str) -> dict[str, object] | None:
    """What was stored with copy ``key`` (the located tables), if it exists."""
    try:
        with open(os.path.join(cache_dir("gopclntab"), key + ".json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == COPY_FORMAT else None


def _check(start: int, end: int, size: int) -> None:
    if not 0 <= start <= end <= size:
        raise Refused("bad_gopclntab", f"range [{start:#x}, {end:#x}) outside the file")


def _disk_copy(fd: int, size: int, ranges: Sequence[tuple[int, int]], key: str,
               meta: dict[str, object]) -> mmap.mmap:
    directory = cache_dir("gopclntab")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, key)
    meta = {**meta, "format": COPY_FORMAT, "size": size}
    if stored_meta(key) != json.loads(json.dumps(meta)) or not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                      0o600)
        try:
            os.ftruncate(out, size)
            for start, end in ranges:
                _check(start, end, size)
                _copy_range(fd, out, start, end)
            with open(f"{tmp}.json", "w") as f:
                json.dump(meta, f)
            os.replace(tmp, path)
            os.replace(f"{tmp}.json", path + ".json")
        except BaseException:
            for leftover in (tmp, f"{tmp}.json"):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
            raise
        finally:
            os.close(out)
        _trim(directory, keep=key)
    copy = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        if os.fstat(copy).st_size != size:
            raise OSError(f"{path}: not {size} bytes")
        return mmap.mmap(copy, size, prot=mmap.PROT_READ)
    finally:
        os.close(copy)


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        try:
            n = os.copy_file_range(src, dst, end - pos, pos, pos)
        except OSError:              # another filesystem or kernel: through user space
            data = os.pread(src, min(CHUNK, end - pos), pos)
            n = os.pwrite(dst, data, pos) if data else 0
        if n <= 0:
            raise Refused("bad_gopclntab", "the file shrank while copied")
        pos += n


def _trim(directory: str, keep: str) -> None:
    """Remove the oldest copies while all of them use more than MAX_CACHE_BYTES."""
    entries = []
    for name in os.listdir(directory):
        if name.endswith((".json", ".tmp")):
            continue
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_blocks * 512, name))
    total = sum(size for _t, size, _n in entries)
    for _mtime, used, name in sorted(entries):
        if total <= MAX_CACHE_BYTES:
            break
        if name == keep:
            continue
        for victim in (name, name + ".json"):
            try:
                os.unlink(os.path.join(directory, victim))
            except OSError:
                pass
        total -= used
