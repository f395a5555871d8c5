"""Find the separate debug file of a binary on local disk, the way gdb does:

1. by build-id: ``<debug_dir>/.build-id/xx/yyyy.debug``;
2. by ``.gnu_debuglink``: next to the binary, in its ``.debug/`` subdirectory,
   and ``<debug_dir>/<binary's dir>/``; a candidate must match the link's CRC32
   (or, cheaper and equally strict, the binary's build-id).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

from telegen.symbols.elf import ElfFile, read_build_id


def build_id_path(debug_dir: str, build_id: str) -> str:
    return os.path.join(debug_dir, ".build-id", build_id[:2], build_id[2:] + ".debug")


def find_debug_file(binary: ElfFile, debug_dirs: Sequence[str], *,
                    root: str = "") -> str | None:
    """Path of a local debug file for ``binary`` or None.

    ``root`` is a ``/proc/PID/root`` prefix: the binary's own directory is
    searched inside the process's mount namespace first, then on the host.
    """
    build_id = binary.build_id
    if build_id and len(build_id) > 2:
        for d in debug_dirs:
            for prefix in ((root, "") if root else ("",)):
                cand = prefix + build_id_path(d, build_id)
                if os.path.isfile(cand) and _same_build_id(cand, build_id):
                    return cand
    link = binary.debuglink()
    if link is None:
        return None
    name, crc = link
    bin_dir = os.path.dirname(binary.path)
    # binary.path may already carry the /proc/PID/root prefix
    seen_dir = bin_dir[len(root):] if root and bin_dir.startswith(root) else bin_dir
    candidates = [os.path.join(bin_dir, name), os.path.join(bin_dir, ".debug", name)]
    for d in debug_dirs:
        candidates.append(os.path.join(d, seen_dir.lstrip("/"), name))
        if root:
            candidates.append(root + os.path.join(d, seen_dir.lstrip("/"), name))
    for cand in candidates:
        if os.path.realpath(cand) == os.path.realpath(binary.path) or not os.path.isfile(cand):
            continue
        if build_id and _same_build_id(cand, build_id):
            return cand
        if not build_id and _crc32(cand) == crc:
            return cand
    return None


def _same_build_id(path: str, build_id: str) -> bool:
    try:
        return read_build_id(path) == build_id
    except Exception:  # not an ELF file, unreadable: not ours
        return False


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF
