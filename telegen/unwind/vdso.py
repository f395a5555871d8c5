"""The vDSO's unwind table: the kernel maps the same small ELF image into every
process; it is read once from a process's memory and cached like any file."""

from __future__ import annotations

import logging
import os
import platform
import threading

from telegen.pdata import Mapping
from telegen.unwind.cache import TableCache
from telegen.unwind.table import UnwindTable

log = logging.getLogger(__name__)
_lock = threading.Lock()
_failed: set[str] = set()


def vdso_table(pid: int, m: Mapping, tables: TableCache) -> UnwindTable | None:
    release = platform.release()
    path = tables.cache_dir / f"vdso-{release}.so"
    with _lock:
        if not path.exists() and release not in _failed:
            try:
                with open(f"/proc/{pid}/mem", "rb") as mem:
                    mem.seek(m.start)
                    image = mem.read(m.limit - m.start)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(image)
                os.replace(tmp, path)
            except (OSError, ValueError) as exc:
                log.debug("cannot read the vDSO of pid %d: %s", pid, exc)
                _failed.add(release)
                return None
    if not path.exists():
        return None
    return tables.get(str(path), "")
