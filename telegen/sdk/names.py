"""How Python frames are named, shared by the SDK and the ``python`` receiver.

A frame's function is ``<module>.<qualified name>``: ``asyncio.tasks.sleep``,
``myapp.worker.Worker.run``, so filter patterns like ``asyncio.*`` apply.
The module comes from ``__name__`` when the sampler sees it (the SDK) and
otherwise from the file path relative to its import root (``site-packages``,
``dist-packages``, ``lib/pythonX.Y``); a script's ``__main__`` (or a file with
no known root) is named after the file (``/srv/app/server.py`` -> ``server``).
Qualified names are ``Class.method`` on 3.11+ (``co_qualname``, also what
py-spy reports); older interpreters only have the bare function name.
Compatible with Python 3.8+.
"""

from __future__ import annotations

import os
import re

_ROOTS = re.compile(r"/(?:site-packages|dist-packages|lib/python\d+(?:\.\d+)?t?)(?=/)")
_cache: dict[str, str] = {}


def module_from_path(path: str) -> str:
    """``asyncio.base_events`` for ``.../lib/python3.12/asyncio/base_events.py``."""
    hit = _cache.get(path)
    if hit is not None:
        return hit
    if path.startswith("<frozen ") and path.endswith(">"):
        mod = path[len("<frozen "):-1]
    elif path.startswith("<"):
        mod = path.strip("<>") or "unknown"
    else:
        roots = list(_ROOTS.finditer(path))
        rel = path[roots[-1].end() + 1:] if roots else os.path.basename(path)
        rel = re.sub(r"\.pyw?$", "", rel)
        if rel.endswith("/__init__"):
            rel = rel[: -len("/__init__")]
        mod = rel.replace("/", ".") or "unknown"
    if len(_cache) < 10000:
        _cache[path] = mod
    return mod


def function_name(module: str, qualname: str, path: str = "") -> str:
    """``module.qualname``; ``__main__`` becomes the script's name."""
    if (not module or module == "__main__") and path:
        module = module_from_path(path)
    return f"{module}.{qualname}" if module else qualname
