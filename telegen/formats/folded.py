"""Stacks → folded lines and call trees, shared by the flame graph, ``diff`` and the UI.

Function naming is the seed table's (``telegen.formats.top.frame_function_names``):
every ``Line`` of a frame is its own entry, so inlined callees appear as their
own frames above the function they were inlined into, and unsymbolized frames
collapse to ``[libc.so.6]``. Stacks are written root first, as flamegraph.pl
and speedscope expect::

    main;work;hot_a;spin 300

A ``;`` inside a name becomes ``:`` (the separator must stay unambiguous); the
value is after the last space, so names may contain spaces.

:func:`build_tree` merges stacks into a tree of :class:`Node` (one child per
distinct function name under a parent). :func:`prune` removes subtrees whose
total is below a fraction of the root's and returns how many frames and how
much value it hid, so a page can say so.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from telegen.formats.top import frame_function_names
from telegen.pdata import Frame, Profile, Sample

# (name, file, line) of one flame-graph frame
FrameName = tuple[str, str, int]
SampleFilter = Callable[[Sample], bool]
ROOT_NAME = "all"


class Node:
    """One frame of the call tree: ``total`` includes the children, ``self_value`` not.

    A plain slotted class: trees of 500k nodes are built per request.
    """

    __slots__ = ("name", "total", "self_value", "file", "lines", "children", "delta")

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.self_value = 0
        self.file = ""
        self.lines: dict[int, int] = {}            # line -> value seen at it
        self.children: dict[str, Node] = {}
        self.delta: float | None = None   # diff trees: grew (+) / shrank (-), normalised

    def child(self, name: str) -> Node:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Node(name)
        return node

    def walk(self) -> Iterator[Node]:
        """Every node of the subtree, this one first (iterative: deep stacks are fine)."""
        todo = [self]
        while todo:
            node = todo.pop()
            yield node
            todo.extend(node.children.values())

    def location(self, most: int = 3) -> str:
        """``file.c:42, :45`` — the file and its hottest lines (empty if unknown)."""
        if not self.file:
            return ""
        hot = sorted(self.lines.items(), key=lambda kv: (-kv[1], kv[0]))[:most]
        if not hot:
            return self.file
        return f"{self.file}:{hot[0][0]}" + "".join(f", :{ln}" for ln, _ in hot[1:])


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What :func:`prune` hid: frames (tree nodes, with their descendants) and value."""

    min_fraction: float
    frames: int
    value: int
    total: int

    @property
    def value_pct(self) -> float:
        return 100.0 * self.value / self.total if self.total else 0.0

    def describe(self) -> str:
        if not self.frames:
            return "no frames pruned"
        return (f"{self.frames} frames below {self.min_fraction * 100:g}% of the total "
                f"hidden ({self.value_pct:.2f}% of the value)")


class _Namer:
    """Memoised frame → names, root-most (outer function) first."""

    def __init__(self) -> None:
        self._memo: dict[Frame, tuple[FrameName, ...]] = {}

    def __call__(self, frame: Frame) -> tuple[FrameName, ...]:
        got = self._memo.get(frame)
        if got is None:
            names = frame_function_names(frame)
            if frame.lines:
                got = tuple((_clean(n), ln.file, ln.line)
                            for n, ln in zip(reversed(names), reversed(frame.lines),
                                             strict=True))
            else:
                got = tuple((_clean(n), "", 0) for n in reversed(names))
            self._memo[frame] = got
        return got


def _clean(name: str) -> str:
    return name.replace(";", ":").replace("\n", " ")


def stack_names(samples: Iterable[Sample], *, group_by: Sequence[str] = (),
                namer: _Namer | None = None) -> Iterator[tuple[Sample, list[FrameName]]]:
    """Each sample with its frames named root first; ``group_by`` labels (e.g.
    ``comm``, ``pid``) become the outermost frames as ``comm=nginx``."""
    name = namer or _Namer()
    for sample in samples:
        path: list[FrameName] = []
        if group_by:
            labels = dict(sample.labels)
            path = [(f"{key}={labels.get(key, '?')}", "", 0) for key in group_by]
        for frame in reversed(sample.stack):
            path.extend(name(frame))
        yield sample, path


def _samples(profile: Profile, sample_filter: SampleFilter | None) -> Iterable[Sample]:
    return profile if sample_filter is None else (s for s in profile if sample_filter(s))


def fold(profile: Profile, sample_type: str | None = None, *, group_by: Sequence[str] = (),
         sample_filter: SampleFilter | None = None) -> dict[tuple[str, ...], int]:
    """Folded stacks (names root first) → summed value of the chosen sample type."""
    idx = profile.value_index(sample_type)
    out: dict[tuple[str, ...], int] = {}
    for sample, path in stack_names(_samples(profile, sample_filter), group_by=group_by):
        key = tuple(n for n, _, _ in path) or ("[no stack]",)
        out[key] = out.get(key, 0) + sample.values[idx]
    return out


def folded_lines(profile: Profile, sample_type: str | None = None, *,
                 group_by: Sequence[str] = (),
                 sample_filter: SampleFilter | None = None) -> list[str]:
    """``a;b;c 123`` lines, sorted, zero values left out (flamegraph.pl / speedscope)."""
    stacks = fold(profile, sample_type, group_by=group_by, sample_filter=sample_filter)
    return [f"{';'.join(k)} {v}" for k, v in sorted(stacks.items()) if v]


def build_tree(profile: Profile, sample_type: str | None = None, *,
               group_by: Sequence[str] = (), sample_filter: SampleFilter | None = None,
               root: Node | None = None) -> Node:
    """Merge every sample's stack into a tree (``root`` to add to an existing one)."""
    idx = profile.value_index(sample_type)
    top = root or Node(ROOT_NAME)
    # The tree is hundreds of thousands of small objects and no cycles: the
    # cyclic GC would rescan them over and over (3x the build time).
    paused = gc.isenabled()
    gc.disable()
    try:
        _add_samples(top, profile, idx, group_by, sample_filter)
    finally:
        if paused:
            gc.enable()
    return top


def _add_samples(top: Node, profile: Profile, idx: int, group_by: Sequence[str],
                 sample_filter: SampleFilter | None) -> None:
    for sample, path in stack_names(_samples(profile, sample_filter), group_by=group_by):
        value = sample.values[idx]
        if not value:
            continue
        node = top
        node.total += value
        for name, file, line in path:
            node = node.child(name)
            node.total += value
            if file and not node.file:
                node.file = file
            if line:
                node.lines[line] = node.lines.get(line, 0) + value
        node.self_value += value


def prune(root: Node, min_fraction: float) -> PruneReport:
    """Remove subtrees whose |total| is below ``min_fraction`` of the root's |total|.

    A parent keeps its full total, so the hidden value shows as a gap above it.
    """
    cutoff = abs(root.total) * min_fraction
    frames = value = 0
    if min_fraction > 0:
        todo = [root]
        while todo:
            node = todo.pop()
            for name, child in list(node.children.items()):
                if abs(child.total) < cutoff and (child.delta is None or
                                                  abs(child.delta) < cutoff):
                    frames += sum(1 for _ in child.walk())
                    value += abs(child.total)
                    del node.children[name]
                else:
                    todo.append(child)
    return PruneReport(min_fraction, frames, value, abs(root.total))


def count_frames(root: Node) -> int:
    """Nodes below the root."""
    return sum(1 for _ in root.walk()) - 1
