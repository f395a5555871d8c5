"""Finding the processes a receiver should attach to: listed pids as they are,
plus (by name or by discovery) the running processes a runtime-specific test
accepts — the same walk for JVMs, CPython interpreters and others."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from telegen.procinfo.procfs import PROC, list_pids

__all__ = ["find_targets", "list_pids"]

P = TypeVar("P")


def find_targets(*, pids: list[int], names: list[str], discover: bool,
                 read: Callable[[int], P | None], accept: Callable[[P], bool],
                 tokens: Callable[[P], set[str]], proc: str = PROC,
                 self_pid: int | None = None) -> list[P]:
    """``pids`` are taken as they are (if readable). With ``names``, or with
    ``discover`` and no ``pids``, every running process that ``accept``s and
    (with names) shares a name token with ``names`` is added; never the agent."""
    me = os.getpid() if self_pid is None else self_pid
    found: dict[int, P] = {}
    for pid in pids:
        p = read(pid)
        if p is not None:
            found[pid] = p
    if names or (discover and not pids):
        wanted = set(names)
        for pid in list_pids(proc):
            if pid in found or pid == me:
                continue
            p = read(pid)
            if p is None or not accept(p):
                continue
            if wanted and not wanted & tokens(p):
                continue
            found[pid] = p
    return [found[pid] for pid in sorted(found)]
