"""Which processes are profiled.

Filtering happens in BPF: ``excluded`` (exclude_pids) is always consulted,
the agent's own pid is compiled in (``SELF_TGID``), and with ``pids`` or
``process_names`` the ``targets`` map says yes (1) or no (2) per tgid, so an
unwanted process costs one hash lookup per sample or context switch and no
stack walk.

``pids`` alone: only those tgids are marked yes; nothing else is sampled.

``process_names``: a tgid the map does not know yet is sampled *until user
space has classified it* (the BPF side's WATCH_EXEC). Its first sample sends
a new-process event; user space matches comm/exe and writes yes or no, and
drops samples of processes it classified no when it reads the window (events
are drained before the counts are read, so every sampled pid is classified by
then). An exec makes the tgid unclassified again. So a process is profiled
from its first scheduled moment, with no /proc polling.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from telegen.procinfo import PROC, list_pids
from telegen.procinfo.procfs import read_comm, read_exe

log = logging.getLogger(__name__)

YES, NO = 1, 2


def process_matches(pid: int, pattern: re.Pattern[str], proc: str = PROC) -> bool | None:
    """Whether ``pattern`` is found in the process's comm or executable path;
    None when the process is gone (nothing to decide on)."""
    comm = read_comm(pid, proc)
    if comm is None:
        return None
    if pattern.search(comm):
        return True
    exe = read_exe(pid, proc)
    return bool(exe) and bool(pattern.search(exe))


class Targets:
    def __init__(self, *, pids: list[int], pattern: re.Pattern[str] | None,
                 exclude_pids: list[int], self_pid: int, self_profile: bool,
                 proc: str = PROC) -> None:
        self.pids = set(pids)
        self.pattern = pattern
        self.exclude = set(exclude_pids)
        self.self_pid = self_pid
        self.self_profile = self_profile
        self.proc = proc
        self._targets: Any = None
        self._excluded_map: Any = None
        self._children: set[int] = set()         # the agent's own (procinfo.agent)
        self._decided: dict[int, bool] = {}      # pid -> wanted, for name targeting
        # Decisions about exited processes are kept until the windows that may
        # still hold their samples have been read (as ProcessCache does).
        self._exited_new: set[int] = set()
        self._exited_old: set[int] = set()

    @property
    def filtering(self) -> bool:
        return bool(self.pids or self.pattern)

    def install(self, targets_map: Any, excluded_map: Any) -> None:
        """Fill the BPF maps at start."""
        self._excluded_map = excluded_map
        for pid in self.exclude:
            excluded_map[excluded_map.Key(pid)] = excluded_map.Leaf(1)
        if not self.filtering:
            return
        self._targets = targets_map
        for pid in self.pids:
            self._write(pid, True)

    def _excluded(self, pid: int) -> bool:
        return pid in self.exclude or (not self.self_profile and (
            pid == self.self_pid or pid in self._children))

    def own_child(self, pid: int, started: bool) -> None:
        """A child the agent runs for its own work (procinfo.agent.child_started):
        not profiled, unless the agent profiles itself (``self_profile``)."""
        if self.self_profile or pid in self.exclude:
            return
        m = self._excluded_map
        try:
            if started:
                self._children.add(pid)
                if m is not None:
                    m[m.Key(pid)] = m.Leaf(1)
            else:
                self._children.discard(pid)
                if m is not None:
                    del m[m.Key(pid)]
        except KeyError:
            pass
        except Exception as exc:       # a full map: the child is profiled, nothing else
            log.debug("cannot mark the agent's child %d: %s", pid, exc)

    def wanted(self, pid: int) -> bool:
        """Whether samples of ``pid`` belong in the profile (read-time filter)."""
        if self._excluded(pid):
            return False
        if not self.filtering or pid in self.pids:
            return True
        if self.pattern is None:
            return False
        decided = self._decided.get(pid)
        if decided is None:
            decided = self.classify(pid)
        return decided

    def classify(self, pid: int) -> bool:
        """Decide (again) whether a process is wanted and tell the BPF side. A
        process already gone keeps its last decision: an exiting task is still
        scheduled once more after its exit event, and that must not undo it."""
        if self._excluded(pid):
            want = False
        elif pid in self.pids:
            want = True
        elif self.pattern is None:
            want = False
        else:
            matched = process_matches(pid, self.pattern, self.proc)
            if matched is None:
                return self._decided.get(pid, False)
            want = matched
        if self.pattern is not None:
            self._decided[pid] = want
            self._exited_new.discard(pid)
            self._exited_old.discard(pid)
        if self._targets is not None:
            self._write(pid, want)
        return want

    def initial_pids(self) -> list[int]:
        """Targeted processes running now (``process_names``: classified by a scan
        of /proc), for what must be attached per process (memory uprobes)."""
        if self.pattern is None:
            return sorted(self.pids)
        return [pid for pid in list_pids(self.proc) if self.classify(pid)]

    def on_exec(self, pid: int) -> None:
        if self.pattern is not None:
            self.classify(pid)

    def on_exit(self, pid: int) -> None:
        if pid in self._decided:
            self._exited_new.add(pid)

    def end_window(self) -> None:
        """Forget processes that exited before the previous window closed."""
        for pid in self._exited_old:
            self._decided.pop(pid, None)
        self._exited_old, self._exited_new = self._exited_new, set()

    def _write(self, pid: int, want: bool) -> None:
        try:
            self._targets[self._targets.Key(pid)] = self._targets.Leaf(YES if want else NO)
        except Exception as exc:     # an LRU map does not fill up; anything else is logged
            log.warning("cannot mark pid %d in the targets map: %s", pid, exc)

    def __len__(self) -> int:
        """Processes currently targeted."""
        return len(self.pids) + sum(1 for p, w in self._decided.items()
                                    if w and p not in self.pids)
