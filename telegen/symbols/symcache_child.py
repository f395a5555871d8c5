"""The symbol-index builder child: one object file's DWARF and symbol tables →
one SymCache file (Sentry's ``symbolic``), under limits it sets on itself
before it reads a byte of the file.

    python -I symcache_child.py FD_PATH OUT CPU_SECONDS ADDRESS_SPACE_BYTES

``FD_PATH`` names a descriptor the child inherited (``procinfo.fd_path``):
the object file, opened and checked by the agent (a regular file, headers
and section sizes checked: :class:`~telegen.symbols.elf.ElfFile`) — never a
path of a profiled process. ``OUT`` is a new file the
agent renames into the index directory when this exits 0.

Limits (the untrusted file chooses how much work it asks for): ``nice 19``;
``RLIMIT_CPU`` = CPU_SECONDS (SIGXCPU, then SIGKILL one second later); SIGKILL when the agent exits;
``RLIMIT_AS`` = ADDRESS_SPACE_BYTES (allocation fails: the build stops with
an error); no core dumps. Exit codes: 0 built, 3 the file is not usable
(message on stderr), anything else a crash or a limit.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
import sys

EXIT_UNUSABLE = 3
PR_SET_PDEATHSIG = 1


def limit_self(cpu_s: float, address_space: int) -> None:
    _die_with_parent()
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    cpu = max(1, math.ceil(cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _die_with_parent() -> None:
    """SIGKILL when the agent's builder thread goes (the agent exits)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def build(fd_path: str, out: str) -> None:
    from symbolic.debuginfo import Archive  # imported under the limits
    from symbolic.symcache import SymCache

    archive = Archive.open(fd_path)
    obj = next(iter(archive.iter_objects()), None)
    if obj is None:
        raise ValueError("no object in the file")
    cache = SymCache.from_object(obj)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(out, flags, 0o600), "wb") as f:
        cache.dump_into(f)
        f.flush()
        drop_page_cache(f.fileno())


def drop_page_cache(fd: int) -> None:
    """Write the index out and drop it from the page cache: written in big
    writes, it sits there in large folios (2 MB on ext4, kernel 6.18) and the
    agent, which maps it, would get a whole folio resident per page a look-up
    touches; read back from disk, a touch maps about 64 KiB (readahead)."""
    try:
        os.fdatasync(fd)                    # dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    fd_path, out, cpu_s, address_space = argv[1], argv[2], float(argv[3]), int(argv[4])
    limit_self(cpu_s, address_space)
    try:
        build(fd_path, out)
    except MemoryError:
        print("memory: over the address-space limit", file=sys.stderr)
        return EXIT_UNUSABLE + 1
    except Exception as exc:     # symbolic's errors: the file is malformed or has no DWARF
        print(f"malformed: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        return EXIT_UNUSABLE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
