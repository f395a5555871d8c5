"""Folded stacks, call trees and pruning against the synthetic profiles."""

from __future__ import annotations

from telegen.formats.folded import build_tree, count_frames, fold, folded_lines, prune
from telegen.formats.top import frame_function_names, top_rows
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, make_labels
from telegen.testing.pprof_checks import synthetic_profiles


def _cpu() -> Profile:
    return synthetic_profiles()[0]


def test_folded_lines_are_root_first_with_inlined_frames_and_sum_to_total() -> None:
    cpu = _cpu()
    idx = cpu.value_index()
    lines = folded_lines(cpu)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == sum(s.values[idx] for s in cpu)
    for sample in cpu:
        names = [n for f in reversed(sample.stack) for n in reversed(frame_function_names(f))]
        want = ";".join(names) + " "
        assert any(line.startswith(want) and line.count(";") == len(names) - 1
                   for line in lines), want
    # the inlined callee is its own frame above the function it was inlined into
    assert any(";parse_number;parse_digit " in line for line in lines)
    assert lines == sorted(lines)


def test_separator_in_names_and_group_by_labels() -> None:
    p = Profile(name="cpu", sample_types=CPU)
    odd = Frame(FrameKind.NATIVE, 1, None, (Line("a;b"),))
    p.add((odd,), [1, 10], make_labels(comm="srv", pid=7))
    p.add((odd,), [2, 20], make_labels(comm="cli", pid=8))
    stacks = fold(p, group_by=("comm",))
    assert stacks == {("comm=srv", "a:b"): 10, ("comm=cli", "a:b"): 20}
    assert fold(p, "samples") == {("a:b",): 3}


def test_tree_totals_are_consistent_and_match_top_cum() -> None:
    cpu = _cpu()
    root = build_tree(cpu)
    assert root.total == sum(s.values[cpu.value_index()] for s in cpu)
    for node in root.walk():
        assert node.total == node.self_value + sum(c.total for c in node.children.values())
    # a function's cum in the table equals the sum over its outermost tree nodes
    for row in top_rows(cpu, n=0, node_fraction=0):
        outer = 0
        todo = [(root, False)]
        while todo:
            node, inside = todo.pop()
            here = node.name == row.name
            if here and not inside:
                outer += node.total
            todo += [(c, inside or here) for c in node.children.values()]
        assert outer == row.cum, row.name
    digit = root.children["main"].children["handle"].children["parse_number"]
    assert digit.children["parse_digit"].location() == "/src/parse.c:17"


def test_prune_counts_what_it_hides_and_keeps_totals() -> None:
    cpu = _cpu()
    root = build_tree(cpu)
    before = count_frames(root)
    smallest = min(n.total for n in root.walk())
    cutoff_fraction = (smallest + 1) / root.total
    hidden = [n for n in root.walk() if n is not root and n.total < smallest + 1]
    report = prune(root, cutoff_fraction)
    assert report.frames == before - count_frames(root) and report.frames >= len(hidden) > 0
    assert report.total == root.total
    assert all(n.total >= smallest + 1 for n in root.walk() if n is not root)
    assert str(report.frames) in report.describe()
    assert prune(build_tree(cpu), 0).frames == 0


def test_prune_keeps_small_frames_that_changed_a_lot() -> None:
    root = build_tree(_cpu())
    small = min((n for n in root.walk() if n is not root), key=lambda n: n.total)
    small.delta = float(root.total)          # a diff says it changed by the whole total
    for n in root.walk():
        if n is not small and n.delta is None:
            n.delta = 0.0
    prune(root, (small.total + 1) / root.total)
    assert any(n is small for n in root.walk())
