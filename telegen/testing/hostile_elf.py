"""Crafted ELF files and a tenant process that maps them, for the security
tests of the symbolizer and the unwinder: what a profiled process can put in
front of the root agent."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

from elftools.elf.elffile import ELFFile

from telegen.procinfo.maps import MapEntry, read_maps

# mmap()s every file named on its command line PROT_READ|PROT_EXEC (no loader
# checks: any bytes), prints "ready", then sleeps until killed.
MAPPER_SOURCE = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) { perror(argv[i]); return 1; }
        if (mmap(0, st.st_size, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0) == MAP_FAILED) {
            perror("mmap"); return 1;
        }
        close(fd);
    }
    puts("ready");
    fflush(stdout);
    for (;;) pause();
}
"""

TENANT_LIB_SOURCE = r"""
__attribute__((noinline)) int tenant_function_abc(int x) {
    int s = 0;
    for (int i = 0; i < x; i++) s += i * 7;
    return s;
}
__attribute__((noinline)) int tenant_other_def(int x) { return tenant_function_abc(x) + 1; }
"""


def build(source: str, out: Path, *, flags: Sequence[str] = ("-O1",),
          shared: bool = False) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    args = ["gcc", *flags, *(("-shared", "-fPIC") if shared else ()), "-o", str(out), str(src)]
    subprocess.run(args, check=True, capture_output=True)
    return out


def staging_dir(prefix: str) -> Path:
    """A fresh world-readable directory outside /tmp (a namespaced tenant mounts
    its own /tmp) holding the ``mapper`` program."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(d, 0o755)
    build(MAPPER_SOURCE, d / "mapper")
    os.chmod(d / "mapper", 0o755)
    return d


def mapping_of(pid: int, path: str) -> MapEntry:
    """The first mapping of ``path`` (as the process's maps show it) in ``pid``."""
    for e in read_maps(pid) or ():
        if e.path.removesuffix(" (deleted)") == path:
            return e
    raise LookupError(f"{path} not mapped in {pid}")


def symbol_offset(binary: Path, name: str) -> int:
    """File offset of function ``name`` (+4: inside it)."""
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name(name)[0]  # type: ignore[union-attr]
        value = sym["st_value"]
        for seg in elf.iter_segments():
            lo = seg["p_vaddr"]
            if seg["p_type"] == "PT_LOAD" and lo <= value < lo + seg["p_filesz"]:
                return int(value - seg["p_vaddr"] + seg["p_offset"] + 4)
    raise LookupError(name)


def section_header(binary: Path, name: str) -> tuple[int, int, int]:
    """(index, offset of its section header, sh_offset) of section ``name`` (ELF64)."""
    with open(binary, "rb") as f:
        elf = ELFFile(f)
        for i, sec in enumerate(elf.iter_sections()):
            if sec.name == name:
                return i, elf["e_shoff"] + i * elf["e_shentsize"], sec["sh_offset"]
    raise LookupError(name)


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def debuglink_section(name: bytes, crc: int) -> bytes:
    """The content of a ``.gnu_debuglink`` section naming ``name`` (any bytes)."""
    body = name + b"\0"
    body += b"\0" * (-len(body) % 4)
    return body + struct.pack("<I", crc)


def add_section(binary: Path, name: str, content: bytes, out: Path) -> Path:
    blob = out.with_suffix(".blob")
    blob.write_bytes(content)
    subprocess.run(["objcopy", "--add-section", f"{name}={blob}", str(binary), str(out)],
                   check=True, capture_output=True)
    return out


class OpenWatch:
    """Which of the watched files anybody opened or read (inotify inode
    watches: a path through /proc/PID/root or map_files reaches the same inode)."""

    _IN_ACCESS, _IN_OPEN = 0x001, 0x020

    def __init__(self, paths: Sequence[Path]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        self.names: dict[int, str] = {}
        for p in paths:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(p), self._IN_OPEN | self._IN_ACCESS)
            assert wd >= 0, (p, ctypes.get_errno())
            self.names[wd] = str(p)

    def opened(self) -> list[str]:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        seen = []
        while data:
            wd, _mask, _cookie, size = struct.unpack_from("iIII", data)
            seen.append(self.names.get(wd, str(wd)))
            data = data[16 + size:]
        return seen

    def close(self) -> None:
        os.close(self.fd)


def tiny_units_dwarf(count: int) -> tuple[bytes, bytes]:
    """(.debug_info, .debug_abbrev) of ``count`` minimal compile units (28
    bytes each, covering nothing): cheap to write, ~40 µs each for pyelftools
    to read — what the CPU budget is for."""
    abbrev = bytes([1, 0x11, 0, 0x11, 0x01, 0x12, 0x07, 0, 0, 0])
    die = bytes([1]) + struct.pack("<QQ", 0x10, 0x8)
    unit = struct.pack("<IHIB", 2 + 4 + 1 + len(die), 4, 0, 8) + die
    return unit * count, abbrev


def remember_state_cfi(count: int, start: int, size: int) -> bytes:
    """A ``.debug_frame`` of one CIE and one FDE whose instructions are
    ``count`` × ``DW_CFA_remember_state``: each copies the row (pyelftools
    deep-copies it) — what the memory budget is for."""
    def pad(body: bytes) -> bytes:
        return body + b"\0" * (-(len(body) + 4) % 8)     # DW_CFA_nop
    cie = pad(struct.pack("<IB", 0xFFFFFFFF, 1) + b"\0" + bytes([1, 0x78, 16])
              + bytes([0x0C, 7, 8, 0x90, 1]))
    fde = pad(struct.pack("<IQQ", 0, start, size) + b"\x0a" * count)
    return struct.pack("<I", len(cie)) + cie + struct.pack("<I", len(fde)) + fde


def zlib_bomb_section(size: int, *, gnu_zdebug: bool = False) -> bytes:
    """Section content inflating to ``size`` zero bytes: an ELF64 compression
    header (SHF_COMPRESSED; set the flag with :func:`set_section_flags`) or the
    old GNU ``.zdebug`` form (``ZLIB`` + big-endian size)."""
    import zlib

    c = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    body = b"".join(c.compress(chunk) for _ in range(size >> 20)) + c.flush()
    if gnu_zdebug:
        return b"ZLIB" + struct.pack(">Q", size) + body
    return struct.pack("<IIQQ", 1, 0, size, 1) + body


def set_section_flags(binary: Path, name: str, flags: int) -> None:
    """OR ``flags`` into section ``name``'s ``sh_flags`` (ELF64, little-endian)."""
    _i, shdr, _off = section_header(binary, name)
    with open(binary, "r+b") as f:
        f.seek(shdr + 8)
        old = struct.unpack("<Q", f.read(8))[0]
        f.seek(shdr + 8)
        f.write(struct.pack("<Q", old | flags))
