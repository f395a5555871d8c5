"""Build small native programs (C, C++, Rust) in a temp dir, run them, and turn
symbol addresses into the frames a receiver would produce from a live process.

Used by the symbols tests and ``bench/symbolize.py``. Programs signal they are
ready by printing a line on stdout; :class:`LiveProcess` waits for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from telegen.pdata import Frame, FrameKind, Mapping
from telegen.procinfo import read_maps as procinfo_maps
from telegen.symbols.elf import ElfFile


class BuildError(RuntimeError):
    """A compiler is missing or compiling failed."""


def compile_c(source: str, out: Path, *, flags: Sequence[str] = ("-O2", "-g"),
              cxx: bool = False) -> Path:
    """Compile one C (or C++ with ``cxx``) translation unit into ``out``."""
    compiler = shutil.which("g++" if cxx else "gcc")
    if compiler is None:
        raise BuildError("g++/gcc not installed")
    src = out.with_suffix(".cpp" if cxx else ".c")
    src.write_text(source)
    _run([compiler, *flags, "-o", str(out), str(src)])
    return out


def compile_rust(source: str, out: Path, *, mangling: str = "v0", opt: str = "1",
                 debuginfo: int = 0, crate_name: str = "rdemo",
                 extra: Sequence[str] = ()) -> Path:
    """Compile a one-file Rust program. ``mangling``: 'v0' or 'legacy' (the default scheme)."""
    rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
    if not os.path.exists(rustc):
        raise BuildError("rustc not installed")
    src = out.with_suffix(".rs")
    src.write_text(source)
    args = [rustc, "--edition=2021", "--crate-name", crate_name, "-C", f"opt-level={opt}",
            "-C", f"debuginfo={debuginfo}", *extra, "-o", str(out), str(src)]
    if mangling == "v0":
        args[1:1] = ["-C", "symbol-mangling-version=v0"]
    _run(args)
    return out


def split_debug(binary: Path, debug_out: Path) -> Path:
    """``objcopy --only-keep-debug`` into ``debug_out``, then strip ``binary``."""
    _run(["objcopy", "--only-keep-debug", str(binary), str(debug_out)])
    _run(["strip", "--strip-all", str(binary)])
    return debug_out


def nm(path: Path | str, *, dynamic: bool = False) -> dict[str, int]:
    """Defined function symbols → link-time address, from binutils' ``nm``."""
    args = ["nm", "--defined-only"] + (["-D"] if dynamic else []) + [str(path)]
    out = subprocess.run(args, capture_output=True, text=True, check=False).stdout
    result: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtWwi":
            result.setdefault(parts[2].split("@")[0], int(parts[0], 16))
    return result


@dataclass(frozen=True)
class MapEntry:
    start: int
    limit: int
    offset: int
    perms: str
    file: str

    def mapping(self, build_id: str = "") -> Mapping:
        return Mapping(self.start, self.limit, self.offset, self.file, build_id)


def read_maps(pid: int) -> list[MapEntry]:
    """The mappings of a live ``pid`` (``ProcessLookupError`` when it is gone)."""
    entries = procinfo_maps(pid)
    if entries is None:
        raise ProcessLookupError(pid)
    return [MapEntry(e.start, e.end, e.offset, e.perms, e.path) for e in entries]


def process_frame(pid: int, file: str, vaddr: int, *, build_id: str = "") -> Frame:
    """The native frame a receiver would report for link-time address ``vaddr``
    of ``file`` mapped in process ``pid`` (load bias applied via PT_LOAD + maps)."""
    real = os.path.realpath(file)
    elf = ElfFile(real)
    try:
        seg = next(s for s in elf.segments if s.vaddr <= vaddr < s.vaddr + s.memsz)
    finally:
        elf.close()
    file_offset = vaddr - seg.vaddr + seg.offset
    for m in read_maps(pid):
        if m.file and os.path.realpath(m.file) == real and \
                m.offset <= file_offset < m.offset + (m.limit - m.start):
            addr = m.start + file_offset - m.offset
            return Frame(FrameKind.NATIVE, addr, m.mapping(build_id))
    raise LookupError(f"0x{vaddr:x} of {file} is not mapped in process {pid}")


class LiveProcess:
    """Runs a program until the context exits; waits for its first stdout line."""

    def __init__(self, args: Sequence[str], *, ready_timeout_s: float = 20.0,
                 env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.args = list(args)
        self.cwd = cwd            # where the program may drop files (node's v8 logs)
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.first_line = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> LiveProcess:
        import selectors

        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True,
                                     env=self.env, cwd=self.cwd)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(self.ready_timeout_s):
            self.__exit__()
            raise TimeoutError(f"{self.args[0]} printed nothing in {self.ready_timeout_s}s")
        self.first_line = self.proc.stdout.readline().strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()


def addr2line(binary: Path | str, address: int) -> list[tuple[str, str, int]]:
    """binutils ``addr2line -f -i`` (the reference): [(function, file, line)]
    innermost first."""
    out = subprocess.run(["addr2line", "-f", "-i", "-e", str(binary), hex(address)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    result = []
    for func, loc in zip(out[::2], out[1::2], strict=False):
        file, _, line = loc.rpartition(":")
        line = line.split()[0] if line else "0"
        result.append((func, file, int(line) if line.isdigit() else 0))
    return result


def _run(args: Sequence[str]) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(args)} failed:\n{proc.stderr}")
