"""Finding CPython processes: by pid, by name, or by discovery (an executable
named like a CPython interpreter, ``python``, ``python3``, ``python3.12``...,
or one that maps ``libpython3.X``), supported versions 3.8-3.13 when the
version can be told from the executable or library name."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from telegen.procinfo import PROC, read_command, read_maps
from telegen.procinfo.scan import find_targets

SUPPORTED = ((3, 8), (3, 13))
_EXE = re.compile(r"^python(\d+(?:\.(\d+))?)?t?(?:-dbg)?$")
_LIB = re.compile(r"/libpython(\d+)\.(\d+)t?(?:d)?\.so")


@dataclass(frozen=True)
class PythonProcess:
    pid: int
    comm: str
    exe: str
    cmdline: tuple[str, ...]
    version: tuple[int, int] | None     # None when it cannot be told


def read_python(pid: int, proc: str = PROC) -> PythonProcess | None:
    c = read_command(pid, proc)
    if c is None:
        return None
    return PythonProcess(pid, c.comm, c.exe, c.cmdline, _version(pid, c.exe, proc))


def _version(pid: int, exe: str, proc: str) -> tuple[int, int] | None:
    m = _EXE.match(os.path.basename(exe))
    if m and m.group(2):
        major, minor = m.group(1).split(".")[:2]
        return int(major), int(minor)
    for e in read_maps(pid, proc) or ():
        lib = _LIB.search(e.path)
        if lib:
            return int(lib.group(1)), int(lib.group(2))
    return None


def is_cpython(p: PythonProcess) -> bool:
    """An interpreter executable (not a tool that embeds Python), of a supported version."""
    if not _EXE.match(os.path.basename(p.exe)):
        return False
    if p.version is None:
        return True
    return SUPPORTED[0] <= p.version <= SUPPORTED[1]


def name_tokens(p: PythonProcess) -> set[str]:
    """Names a process answers to: comm, interpreter name, the script (path and
    base name, with and without ``.py``) or the ``-m`` module."""
    tokens = {p.comm, os.path.basename(p.exe)}
    args = list(p.cmdline[1:])
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "-m":
            if i + 1 < len(args):
                tokens.add(args[i + 1])
            break
        if arg == "-c":
            break
        if arg in ("-X", "-W", "-Q"):
            skip = True
            continue
        if arg.startswith("-"):
            continue
        base = os.path.basename(arg)
        tokens.update({arg, base, base.removesuffix(".py")})
        break
    tokens.discard("")
    return tokens


def find_pythons(*, pids: list[int], names: list[str], discovery: bool,
                 proc: str = PROC, self_pid: int | None = None) -> list[PythonProcess]:
    """Processes to sample now. Listed pids are taken as they are (the engine
    tells when one is not Python); names and discovery pick CPython
    interpreters only, never the agent itself."""
    return find_targets(
        pids=pids, names=names, discover=discovery, proc=proc, self_pid=self_pid,
        read=lambda pid: read_python(pid, proc),
        accept=lambda p: bool(p.cmdline) and is_cpython(p), tokens=name_tokens)
