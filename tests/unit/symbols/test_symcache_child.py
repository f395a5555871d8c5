"""The symbol-index child leaves its SymCache out of the page cache: the
agent maps the file, and a file just written sits in large folios (2 MB on
ext4, kernel 6.18), each mapped whole by the first look-up touching it."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from telegen.symbols.budget import DEFAULT_LIMITS
from telegen.symbols.symindex import IndexBuilder

LIBPYTHON = "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0"   # setup-host: 13.7 MB DWARF


def resident_kb(path: str) -> int:
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                inside = len(head) > 5 and head[5] == path
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


def test_a_built_index_maps_a_few_pages_per_touch(tmp_path: Path) -> None:
    builder = IndexBuilder(str(tmp_path), DEFAULT_LIMITS)
    fd = os.open(LIBPYTHON, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        job = builder.open_or_build(fd, "", (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                                    "libpython3.12")
        assert job.done.wait(120) and job.index is not None, job.reason
    finally:
        os.close(fd)
        builder.close()
    size = os.path.getsize(job.path)
    assert size > 4 << 20                          # a 7.7 MB SymCache
    with open(job.path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    try:
        touched = [mapped[at] for at in (size // 5, size // 2, size * 4 // 5)]
        assert len(touched) == 3
        assert resident_kb(job.path) <= 3 * 256, "a touch mapped a whole large folio"
    finally:
        mapped.close()
