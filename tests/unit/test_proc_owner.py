"""``telegen/procinfo/`` is the one owner of ``/proc`` (issue #23): no other
module of the package spells a ``/proc`` path. Receivers, the symbolizer and
the doctor ask procinfo (``process_root``, ``read_maps``, ``start_ticks``,
``alive``, ``fd_path``, ``KALLSYMS``...) and keep only their own logic.

A ``/proc`` path is found in the code, never in docstrings or comments:
a string that starts with ``/proc`` (an f-string too), an f-string that puts
``/...`` right after a variable naming a proc root (``f"{proc}/{pid}"``,
``f"{self._proc}/..."``), or a path built or listed from such a variable
(``os.path.join(proc_root, ...)``, ``os.listdir(proc)``, ``Path(proc)``): the
shapes every /proc read outside procinfo had.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "telegen"
OWNER = PACKAGE / "procinfo"

# Kept for good, each with its reason.
ALLOWED: dict[str, str] = {
    "testing/containers.py":
        "nspid() is the container tests' ground truth for the namespaced pid, which "
        "they compare with procinfo's own reading: it must not be procinfo's parser",
    "testing/hostile.py":
        "the security tests' meter of the agent process from outside (VmRSS/VmHWM), "
        "reset by writing clear_refs: a write, and independent of the code it measures",
}


def _is_proc_root_name(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else \
        node.attr if isinstance(node, ast.Attribute) else ""
    return name.lstrip("_") in ("proc", "proc_root", "procfs")


_PATH_CALLS = frozenset({"join", "listdir", "scandir", "Path", "PurePath", "walk"})


def _callee(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else \
        func.attr if isinstance(func, ast.Attribute) else ""


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of string constants standing alone as statements (docstrings)."""
    return {id(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}


def _starts_proc(text: str) -> bool:
    return text == "/proc" or text.startswith("/proc/")


def proc_paths(source: str) -> list[int]:
    """Line numbers of /proc paths in ``source``."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    lines: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            first = parts[0] if parts else None
            if isinstance(first, ast.Constant) and _starts_proc(str(first.value)):
                lines.append(node.lineno)
                continue
            for a, b in zip(parts, parts[1:], strict=False):
                if isinstance(a, ast.FormattedValue) and _is_proc_root_name(a.value) \
                        and isinstance(b, ast.Constant) and str(b.value).startswith("/"):
                    lines.append(node.lineno)
                    break
            for part in parts:           # the pieces were looked at as a whole
                skip.add(id(part))
        elif isinstance(node, ast.Call) and node.args and _is_proc_root_name(node.args[0]) \
                and _callee(node.func) in _PATH_CALLS:
            lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in skip and _starts_proc(node.value):
            lines.append(node.lineno)
    return sorted(set(lines))


def _all_hits() -> dict[str, list[int]]:
    hits = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if OWNER in path.parents:
            continue
        found = proc_paths(path.read_text())
        if found:
            hits[str(path.relative_to(PACKAGE))] = found
    return hits


def test_no_proc_path_outside_procinfo() -> None:
    hits = _all_hits()
    stray = {f: lines for f, lines in hits.items()
             if f not in ALLOWED}
    assert not stray, (
        "/proc read outside telegen/procinfo (ask procinfo; add what it lacks there): "
        + ", ".join(f"telegen/{f}:{lines}" for f, lines in stray.items()))


def test_allowed_exceptions_are_still_needed() -> None:
    """A kept entry whose file no longer spells /proc is removed. (Pending
    entries are not checked: their owners move them while this runs.)"""
    hits = _all_hits()
    stale = sorted(f for f in ALLOWED if f not in hits)
    assert not stale, f"no /proc path left in {stale}: remove them from ALLOWED"
    assert all(len(reason) > 40 for reason in ALLOWED.values())


@pytest.mark.parametrize("source", [
    'open(f"/proc/{pid}/maps")',
    'Path("/proc/self/statm").read_text()',
    'os.listdir("/proc")',
    'def f(proc: str = "/proc") -> None: ...',
    'os.readlink(f"{proc}/{pid}/exe")',
    'os.path.exists(f"{self._proc}/{key.pid}")',
    'x = f"{proc_root}/{pid}/root"',
    'os.path.exists(os.path.join(self.options.proc_root, str(pid)))',
    'for name in os.listdir(self._proc): pass',
    'Path(proc) / str(pid)',
])
def test_finder_sees_proc_paths(source: str) -> None:
    assert proc_paths(source) == [1]


@pytest.mark.parametrize("source", [
    '"""Paths go through ``/proc/PID/root``."""',
    'def f():\n    """Reads /proc/PID/maps."""\n',
    '# read /proc/kallsyms\nx = 1',
    'description = "debuginfod, /proc/kallsyms, perf maps"',
    'open(f"{root}/etc/os-release")',
    'x = "/processes"',
    'x = f"{proc}-{pid}"',
    'read_maps(pid, proc)',
    'find_targets(pids=[], proc=proc)',
    'os.path.join(root, "proc")',
])
def test_finder_passes_over_prose_and_other_paths(source: str) -> None:
    assert proc_paths(source) == []
