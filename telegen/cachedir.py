"""Where the agent keeps what it builds or downloads once per host (CFI unwind
tables, debuginfod files): ``/var/cache/telegen/<name>`` as root (the agent's
normal case; a volume there keeps it across container restarts), else
``$XDG_CACHE_HOME/telegen/<name>`` (default ``~/.cache``).
``TELEGEN_CACHE_DIR`` replaces the base (benches start from an empty one)."""

from __future__ import annotations

import os


def cache_dir(name: str) -> str:
    if os.environ.get("TELEGEN_CACHE_DIR"):
        return os.path.join(os.environ["TELEGEN_CACHE_DIR"], name)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return os.path.join("/var/cache/telegen", name)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "telegen", name)
