"""The vDSO's unwind table: the kernel maps the same small ELF image into every
process. It is read once from the *agent's own* memory (a profiled process can
change its copy — a debugger's breakpoint writes through — and the image is
cached on disk for every process) and cached like any file."""

from __future__ import annotations

import logging
import os
import platform
import threading

from telegen.pdata import Mapping
from telegen.procinfo.agent import read_own_memory, vdso_span
from telegen.unwind.cache import TableCache
from telegen.unwind.table import UnwindTable

log = logging.getLogger(__name__)
_lock = threading.Lock()
_failed: set[str] = set()
MAX_VDSO_BYTES = 1 << 20


def vdso_table(pid: int, m: Mapping, tables: TableCache) -> UnwindTable | None:
    """The table of the vDSO (``pid`` and ``m`` name the profiled process's
    mapping; the image itself is the agent's own)."""
    release = platform.release()
    path = tables.cache_dir / f"vdso-{release}.so"
    with _lock:
        if not path.exists() and release not in _failed:
            try:
                span = vdso_span()
                if span is None or not 0 < span[1] - span[0] <= MAX_VDSO_BYTES:
                    raise ValueError(f"no usable [vdso] in the agent: {span}")
                image = read_own_memory(span[0], span[1] - span[0])
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(image)
                os.replace(tmp, path)
            except (OSError, ValueError) as exc:
                log.debug("cannot read the vDSO (for pid %d): %s", pid, exc)
                _failed.add(release)
                return None
    if not path.exists():
        return None
    return tables.get(str(path), "")
