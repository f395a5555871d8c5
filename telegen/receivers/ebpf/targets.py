"""Which processes are profiled.

Filtering happens in BPF: ``excluded`` (exclude_pids) is always consulted,
the agent's own pid is compiled in (``SELF_TGID``), and when ``pids`` or
``process_names`` are given only tgids present in the ``targets`` hash are
sampled. Keeping the check in the kernel means an untargeted process costs
one hash lookup per sample or context switch, and no stack walk or map
entry at all — user-space filtering would pay both for every process on the
host. User space keeps ``targets`` current: explicit pids once, name matches
from a /proc scan at start, on every exec event (so new processes are picked
up within milliseconds) and from a rescan each window (processes that
forked without exec).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

log = logging.getLogger(__name__)


def process_matches(pid: int, pattern: re.Pattern[str], proc: str = "/proc") -> bool:
    """Whether ``pattern`` is found in the process's comm or executable path."""
    try:
        with open(f"{proc}/{pid}/comm", "rb") as f:
            comm = f.read().decode("utf-8", "replace").strip()
    except OSError:
        return False
    if pattern.search(comm):
        return True
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return False
    return bool(pattern.search(exe.removesuffix(" (deleted)")))


def list_pids(proc: str = "/proc") -> list[int]:
    try:
        return [int(n) for n in os.listdir(proc) if n.isdigit()]
    except OSError:
        return []


class Targets:
    def __init__(self, *, pids: list[int], pattern: re.Pattern[str] | None,
                 exclude_pids: list[int], self_pid: int, self_profile: bool,
                 proc: str = "/proc") -> None:
        self.pids = set(pids)
        self.pattern = pattern
        self.exclude = set(exclude_pids)
        self.self_pid = self_pid
        self.self_profile = self_profile
        self.proc = proc
        self._targets: Any = None
        self._matched: set[int] = set()

    @property
    def filtering(self) -> bool:
        return bool(self.pids or self.pattern)

    def install(self, targets_map: Any, excluded_map: Any) -> None:
        """Fill the BPF maps at start."""
        for pid in self.exclude:
            excluded_map[excluded_map.Key(pid)] = excluded_map.Leaf(1)
        if not self.filtering:
            return
        self._targets = targets_map
        for pid in self.pids:
            self._add(pid)
        self.rescan()

    def wanted(self, pid: int) -> bool:
        if pid in self.exclude or (pid == self.self_pid and not self.self_profile):
            return False
        if not self.filtering:
            return True
        return pid in self.pids or pid in self._matched

    def rescan(self) -> None:
        """Match every running process against ``process_names``."""
        if self.pattern is None or self._targets is None:
            return
        for pid in list_pids(self.proc):
            if pid not in self._matched and process_matches(pid, self.pattern, self.proc):
                self._add(pid)

    def on_exec(self, pid: int) -> None:
        if self.pattern is None or self._targets is None:
            return
        if process_matches(pid, self.pattern, self.proc):
            self._add(pid)
        elif pid in self._matched and pid not in self.pids:
            self._remove(pid)      # exec'd into something we do not want

    def on_exit(self, pid: int) -> None:
        if pid in self._matched and pid not in self.pids:
            self._remove(pid)

    def _add(self, pid: int) -> None:
        if pid in self.exclude or (pid == self.self_pid and not self.self_profile):
            return
        if pid in self._matched:
            return
        try:
            self._targets[self._targets.Key(pid)] = self._targets.Leaf(1)
            self._matched.add(pid)
        except Exception as exc:      # map full: counted by the caller via the log
            log.warning("cannot target pid %d: %s", pid, exc)

    def _remove(self, pid: int) -> None:
        self._matched.discard(pid)
        try:
            del self._targets[self._targets.Key(pid)]
        except (KeyError, Exception):
            pass

    def __len__(self) -> int:
        return len(self._matched)
